extension Daemon {
    /// Accepts what is queued on one listening socket, up to a small batch: each
    /// accept also sets up an upstream connect, and bytes of connections already
    /// open should not wait behind a long run of them (tail latency).
    func accept(from endpoint: ListeningEndpoint) {
        guard !stopping, !acceptPaused, endpoint.pause == nil else { return }
        for _ in 0..<Self.acceptBatch {
            let result: IOResult<Sockets.Accepted>
            do {
                result = try Sockets.acceptWithPeer(endpoint.socket.raw)
            } catch {
                acceptFailed(error, on: endpoint)
                return
            }
            guard case .processed(let accepted) = consume result else { break }
            admit(accepted.socket, peer: accepted.peer, on: endpoint)
        }
        if workerCount > 1 { yieldIfBusiest(endpoint) }
    }

    /// EPOLLEXCLUSIVE wakes the first idle worker in the socket's wait queue,
    /// so an idle daemon would take every client on the worker that
    /// registered first, and its long-lived connections would later load one
    /// core. A worker that holds more than its share goes to the back of the
    /// queue (EPOLL_CTL_DEL and ADD again: exclusive waiters are added at the
    /// tail), so the next client wakes another. Two system calls, and only
    /// while the counts are uneven; a busy worker is passed over anyway.
    private func yieldIfBusiest(_ endpoint: ListeningEndpoint) {
        let share = openConnections.current / workerCount
        guard table.count > share + max(1, share / 16), let registration = endpoint.registration else { return }
        loop.deregister(registration)
        endpoint.registration = nil
        updateWatch(endpoint)
    }

    static let acceptBatch = 16
    /// Out of descriptors: every endpoint waits this long.
    static let exhaustionPause = Duration.milliseconds(250)
    /// ENOMEM/ENOBUFS: the kernel may have memory again soon; at most ten
    /// attempts a second per endpoint meanwhile.
    static let memoryPressurePause = Duration.milliseconds(100)
    /// Any other failure of the listening socket itself: retried four times a
    /// second, which costs nothing and notices a recovery quickly.
    static let failurePause = Duration.milliseconds(250)

    private func admit(_ client: consuming FileDescriptor, peer: SocketAddress, on endpoint: ListeningEndpoint) {
        let listener = endpoint.listener
        // Places are taken before the connection exists and given back by its
        // end: every worker counts against the same two limits.
        let daemonHasRoom = openConnections.take(limit: maxConnections)
        let listenerHasRoom = daemonHasRoom && listener.openCount.take(limit: listener.connection.maxConnections)
        guard listenerHasRoom else {
            if daemonHasRoom { openConnections.give() }
            // Closed at once: a client past the limit costs one accept and one close.
            listener.counters.refusedLimit += 1
            let which = daemonHasRoom ? "the listener's" : "the daemon's"
            if let suppressed = allowWarning("limit:\(listener.name)", every: .seconds(10)) {
                logger.warning(
                    "client refused: \(which) max_connections is reached",
                    [
                        ("REAPERD_LISTENER", listener.name), ("REAPERD_PEER", "\(peer)"),
                        ("REAPERD_LIMIT", "\(daemonHasRoom ? listener.connection.maxConnections : maxConnections)"),
                        ("REAPERD_SUPPRESSED", "\(suppressed)"),
                    ])
            }
            client.close()
            return
        }
        let route = listener.settings.mode == .relay ? listener.route : nil
        if listener.settings.mode == .relay && route == nil {
            openConnections.give()
            listener.openCount.give()
            return refuseUnresolved(client, peer: peer, on: listener)
        }
        listener.counters.accepted += 1
        let connection = Connection(
            id: nextConnectionID, listener: listener, client: client, peer: peer, upstream: route?.addresses.first,
            alternatives: Array(route?.addresses.dropFirst() ?? []), upstreamName: route?.name, owner: self,
            now: loop.now)
        // Workers number their connections apart: worker k of n takes k, k + n, ...
        nextConnectionID += UInt64(workerCount)
        table.add(connection)
        _ = connection.start()
    }

    /// The upstream is a name that has not resolved yet (or no longer does and
    /// never did): nothing to connect to, so the client is closed at once and
    /// counted as an `upstream` refusal, logged as upstream failures are.
    private func refuseUnresolved(_ client: consuming FileDescriptor, peer: SocketAddress, on listener: ListenerState) {
        listener.counters.refusedUpstream += 1
        if let suppressed = allowWarning("upstream:\(listener.name)", every: .seconds(1)) {
            let name = listener.settings.upstream.map { "\($0)" } ?? ""
            logger.warning(
                "client refused: upstream \(name) has not resolved",
                [
                    ("REAPERD_LISTENER", listener.name), ("REAPERD_PEER", "\(peer)"), ("REAPERD_UPSTREAM", name),
                    ("REAPERD_ERROR", listener.resolution?.lastError ?? "no answer yet"),
                    ("REAPERD_SUPPRESSED", "\(suppressed)"),
                ])
        }
        client.close()
    }

    /// A failed accept leaves the connection queued (or the socket failed), so
    /// the socket stays readable and accepting again at once would spin.
    ///
    /// - EMFILE/ENFILE pause every endpoint: descriptors are per process (and
    ///   system), so accept fails on all of them until one is freed, and pausing
    ///   one would only move the spin to the next. One warning per ten seconds.
    /// - ENOMEM/ENOBUFS pause this endpoint briefly.
    /// - A failure for one connection only (aborted, refused by a firewall
    ///   hook) is no reason to wait: the next accept takes the next client.
    /// - Anything else is this listening socket's own trouble (EINVAL once it
    ///   no longer listens): this endpoint alone pauses, the others keep
    ///   accepting, and the error is logged once per ten seconds.
    private func acceptFailed(_ error: SystemError, on endpoint: ListeningEndpoint) {
        if error.errno.isDescriptorExhaustion {
            // Descriptors are the process's: one warning per ten seconds
            // whichever worker ran out, with how often any did meanwhile.
            if let times = processWide.exhaustionToReport(now: loop.now, every: .seconds(10)) {
                logger.warning(
                    "out of file descriptors, accepting paused",
                    [
                        ("REAPERD_ERROR", "\(error)"), ("REAPERD_TIMES", "\(times)"),
                        ("REAPERD_CONNECTIONS", "\(openConnections.current)"),
                    ], event: .acceptPaused)
            }
            pauseAllAccepting(for: Self.exhaustionPause)
        } else if error.errno.isMemoryPressure {
            logFailure(error, on: endpoint, "kernel short of memory, accepting paused", level: .warning)
            pause(endpoint, for: Self.memoryPressurePause)
        } else if !error.errno.isAcceptAgain {
            logFailure(error, on: endpoint, "accept failed", level: .err)
            pause(endpoint, for: Self.failurePause)
        }
    }

    private func logFailure(_ error: SystemError, on endpoint: ListeningEndpoint, _ message: String, level: LogLevel) {
        // The socket is every worker's: one line per ten seconds, whichever failed.
        guard
            let suppressed = allowWarning("accept:\(endpoint.listener.name)@\(endpoint.key)", every: .seconds(10))
        else { return }
        let fields = [
            ("REAPERD_LISTENER", endpoint.listener.name), ("REAPERD_ADDRESS", endpoint.address),
            ("REAPERD_ERROR", "\(error)"), ("REAPERD_SUPPRESSED", "\(suppressed)"),
        ]
        logger.log(level, message, fields, event: .acceptPaused)
    }

    /// Stops watching `endpoint` for `delay`; the other endpoints keep accepting.
    func pause(_ endpoint: ListeningEndpoint, for delay: Duration) {
        guard endpoint.pause == nil else { return }
        endpoint.pause = loop.schedule(after: delay) { [weak self, weak endpoint] in
            guard let self, let endpoint else { return }
            endpoint.pause = nil
            self.updateWatch(endpoint)
        }
        updateWatch(endpoint)
    }

    /// Stops watching every endpoint for `delay` (descriptor exhaustion).
    func pauseAllAccepting(for delay: Duration) {
        guard !acceptPaused else { return }
        acceptPaused = true
        for endpoint in endpoints { updateWatch(endpoint) }
        loop.schedule(after: delay) { [weak self] in
            guard let self else { return }
            self.acceptPaused = false
            for endpoint in self.endpoints { self.updateWatch(endpoint) }
        }
    }

    /// Registers `endpoint` with the loop or removes it, as the state says: it
    /// is watched unless reaperd is stopping, every endpoint is paused, or this
    /// one is. A paused endpoint leaves the epoll set instead of keeping an
    /// empty interest: epoll reports a hang-up whatever the interest, and a
    /// listening socket that was shut down reports one for ever.
    func updateWatch(_ endpoint: ListeningEndpoint) {
        let wanted = !stopping && !acceptPaused && endpoint.pause == nil
        if wanted && endpoint.registration == nil {
            do {
                // Every worker watches every listening socket; with more than
                // one, a client wakes one of them, not all (no thundering herd).
                endpoint.registration = try loop.register(
                    endpoint.socket.raw, interest: workerCount > 1 ? [.readable, .exclusive] : [.readable],
                    handler: endpoint)
            } catch {
                // epoll is out of memory or watches: try again shortly.
                logFailure(error, on: endpoint, "cannot watch listener", level: .err)
                pause(endpoint, for: Self.failurePause)
            }
        } else if !wanted, let registration = endpoint.registration {
            loop.deregister(registration)
            endpoint.registration = nil
        }
    }
}
