extension Daemon {
    /// Points a listener's new connections where its settings say, once a
    /// start or reload has committed them. An address is used as is. A name
    /// is looked up on the resolver thread; when it changed (a reload), new
    /// clients keep going where they went until the new name's first lookup
    /// answers, so the switch happens at one moment, and if that lookup
    /// fails they are refused (as at start) rather than sent to the old
    /// upstream. An unchanged name keeps its addresses and its schedule.
    func followUpstream(_ state: ListenerState) {
        guard state.configured, state.settings.mode == .relay, let upstream = state.settings.upstream else {
            stopResolving(state)
            state.route = nil
            return
        }
        switch upstream {
        case .address(let endpoint):
            stopResolving(state)
            state.route = UpstreamRoute(name: nil, addresses: [endpoint.socketAddress])
        case .name(let host, let port):
            if let resolution = state.resolution, resolution.host == host, resolution.port == port { return }
            stopResolving(state)
            state.resolution = UpstreamResolution(host: host, port: port)
            lookUp(state)
        }
    }

    private func stopResolving(_ state: ListenerState) {
        state.resolution?.timer?.cancel()
        // A lookup in flight is answered under a ticket no listener holds any more: dropped.
        state.resolution = nil
    }

    /// Asks the resolver thread for the listener's name, unless a lookup is in flight.
    private func lookUp(_ state: ListenerState) {
        // Stopping: nothing is accepted any more, and the resolver is closed last.
        guard !stopping, loopRunning, let resolution = state.resolution, resolution.pending == nil else { return }
        state.resolution?.timer = nil
        if resolver == nil {
            do {
                resolver = try Resolver(loop: loop) { [weak self] answer in self?.resolverAnswered(answer) }
            } catch {
                // Out of descriptors or threads: counted and retried like a failed lookup.
                let failure = LookupError(code: 0, message: "cannot start the resolver thread: \(error)")
                return take(.failure(failure), for: state)
            }
        }
        state.resolution?.pending = resolver?.lookUp(host: resolution.host, port: resolution.port)
    }

    private func resolverAnswered(_ answer: LookupAnswer) {
        guard let state = listeners.values.first(where: { $0.resolution?.pending == answer.ticket }) else { return }
        if logger.isEnabled(.debug) {
            logger.debug(
                "upstream looked up",
                [
                    ("REAPERD_LISTENER", state.name), ("REAPERD_UPSTREAM", state.resolution?.name ?? ""),
                    ("REAPERD_RESULT", Self.describe(answer.result)),
                    ("REAPERD_TOOK_MS", "\(answer.took.milliseconds)"),
                ])
        }
        take(answer.result, for: state)
    }

    /// Records an answer (or a failure to ask), routes new connections by it,
    /// says what changed, and schedules the next lookup.
    private func take(_ result: Result<[SocketAddress], LookupError>, for state: ListenerState) {
        guard var resolution = state.resolution else { return }
        let before = resolution.addresses.map(\.description).joined(separator: ", ")
        let event = resolution.record(result, at: loop.now)
        let now = resolution.addresses.map(\.description).joined(separator: ", ")
        var fields: [(name: String, value: String)] = [
            ("REAPERD_LISTENER", state.name), ("REAPERD_UPSTREAM", resolution.name),
        ]
        switch event {
        case .resolved(let first, let changed, let recovered):
            fields.append(("REAPERD_ADDRESSES", now))
            if recovered {
                fields.append(("REAPERD_PREVIOUS", before))
                logger.info("upstream \(resolution.name) resolves again: \(now)", fields)
            } else if first {
                logger.info("upstream \(resolution.name) resolved: \(now)", fields)
            } else if changed {
                fields.append(("REAPERD_PREVIOUS", before))
                logger.info("upstream \(resolution.name) changed address: \(now) (was \(before))", fields)
            }
        case .failed(let streakStarted, let keeping):
            state.counters.resolveFailures += 1
            fields.append(("REAPERD_ERROR", resolution.lastError ?? ""))
            if streakStarted && keeping {
                fields.append(("REAPERD_ADDRESSES", now))
                logger.warning(
                    "upstream \(resolution.name) lookup failed: \(resolution.lastError ?? ""); "
                        + "keeping the last good addresses \(now) until it resolves again", fields)
            } else if streakStarted {
                logger.warning(
                    "upstream \(resolution.name) does not resolve: \(resolution.lastError ?? ""); "
                        + "clients are refused until it does", fields)
            }
        }
        // Only an answer for the name in effect changes the route (see followUpstream).
        if case .resolved = event {
            state.route = resolution.route
            shareRoute(state)
        } else if resolution.addresses.isEmpty {
            state.route = nil
            shareRoute(state)
        }
        let delay = UpstreamResolution.delay(after: event, interval: state.connection.resolveInterval)
        resolution.timer = loop.schedule(after: delay) { [weak self, weak state] in
            guard let self, let state else { return }
            self.lookUp(state)
        }
        state.resolution = resolution
    }

    private static func describe(_ result: Result<[SocketAddress], LookupError>) -> String {
        switch result {
        case .success(let addresses): addresses.map(\.description).joined(separator: ", ")
        case .failure(let error): "failed: \(error.message)"
        }
    }
}
