/// What a reload did.
public enum ReloadOutcome: Equatable, Sendable {
    case applied
    /// Refused; the running configuration is unchanged. The text is one or more
    /// `FILE:LINE: message` lines.
    case refused(String)
}

extension Daemon {
    /// Re-reads the configuration file and applies it: listeners added, removed
    /// or changed, keepalive settings pushed to live connections. An invalid
    /// file changes nothing. No established connection is dropped.
    func reload(trigger: String) -> ReloadOutcome {
        guard !stopping else { return .refused("reaperd is stopping") }
        notifier.reloading()
        let outcome = performReload()
        switch outcome {
        case .applied:
            lastReloadError = nil
            configLoadedAtWallClock = ProcessStats.wallClock()
            logger.info(
                "configuration reloaded", [("REAPERD_CONFIG", configSourceDescription), ("REAPERD_TRIGGER", trigger)],
                event: .reload)
        case .refused(let why):
            lastReloadError = why.split(separator: "\n").first.map(String.init) ?? why
            for line in why.split(separator: "\n") {
                logger.error(
                    "configuration reload refused: \(line)",
                    [("REAPERD_CONFIG", configSourceDescription), ("REAPERD_TRIGGER", trigger)], event: .reloadFailed)
            }
        }
        lastStatus = ""
        notifier.ready(status: statusLine())
        return outcome
    }

    private func performReload() -> ReloadOutcome {
        let next: Configuration
        if let configPath {
            do {
                next = try ConfigFile.load(path: configPath)
            } catch {
                return .refused(error.diagnostics.map(\.description).joined(separator: "\n"))
            }
        } else {
            next = configuration
        }
        do {
            try applyListeners(next)
        } catch {
            return .refused(error.message)
        }
        applyServices(next)
        let previous = configuration.daemon
        configuration = next
        logger.level = next.daemon.logLevel
        // A new poll interval, or services added (read every poll interval).
        rearmSweep()
        // Committed here; each worker takes the same view on its own loop.
        shareView()
        for (name, changed) in [
            ("control_socket", next.daemon.controlSocket != previous.controlSocket),
            ("metrics", next.daemon.metrics != previous.metrics),
            ("log_target", next.daemon.logTarget != previous.logTarget),
            ("fd_store", next.daemon.fdStore != previous.fdStore),
            ("workers", next.daemon.workers != previous.workers),
        ] where changed {
            logger.warning("\(name) changed; it takes effect when reaperd restarts", [("REAPERD_KEY", name)])
        }
        return .applied
    }

    /// SIGTERM/SIGINT: stop accepting, close at once every connection between
    /// exchanges (nothing would be lost), let the others finish for at most
    /// `shutdown_grace` — each closes as soon as it is between exchanges too —
    /// then close what is left and return from `run()`. A second signal skips
    /// the rest of the grace period.
    func beginShutdown(signal: String) {
        if stopping {
            if isPrimary {
                logger.notice("second \(signal): closing remaining connections now")
                shareShutdown(signal: signal)
            }
            closeAllConnections()
            return
        }
        stopping = true
        if isPrimary {
            let total = totalConnections
            notifier.stopping(status: "stopping: \(total) connections draining")
            logger.info(
                "reaperd stopping", [("REAPERD_SIGNAL", signal), ("REAPERD_CONNECTIONS", "\(total)")], event: .stop)
            shareShutdown(signal: signal)
            forceFinishIfWorkersHang()
        }
        for endpoint in endpoints {
            endpoint.pause?.cancel()
            endpoint.pause = nil
            if let registration = endpoint.registration { loop.deregister(registration) }
            endpoint.registration = nil
        }
        endpoints.removeAll()
        sweepTimer?.cancel()
        if storesConnections {
            shutdownIntoStore()
            return
        }
        let open = table.count
        let closed = closeConnectionsBetweenExchanges()
        if open > 0 {
            logger.info(
                "closed the idle connections; waiting for those with a request or bytes under way",
                [
                    ("REAPERD_CLOSED", "\(closed)"), ("REAPERD_WAITING", "\(table.count)"),
                    ("REAPERD_GRACE", ConfigDuration.text(configuration.daemon.shutdownGrace)),
                    ("REAPERD_WORKER", "\(workerIndex)"),
                ])
        }
        if table.count == 0 {
            finishShutdown()
            return
        }
        if isPrimary { notifier.stopping(status: "stopping: \(totalConnections) connections draining") }
        drainStep(until: loop.now.adding(configuration.daemon.shutdownGrace))
    }

    /// A worker that never finishes its drain (stalled) must not keep the
    /// process from exiting: past the grace period and five seconds, the
    /// primary stops without it, and says so.
    private func forceFinishIfWorkersHang() {
        guard !workers.isEmpty else { return }
        loop.schedule(after: configuration.daemon.shutdownGrace + .seconds(5)) { [weak self] in
            guard let self, self.loopRunning, !self.workersFinished else { return }
            let stuck = self.workers.filter { !$0.finished }.map { "\($0.index)" }.joined(separator: ",")
            self.logger.error(
                "workers \(stuck) did not finish their shutdown; exiting without them", [("REAPERD_WORKER", stuck)])
            for worker in self.workers { worker.finished = true }
            if self.shutdownDone { self.finishShutdown() } else { self.closeAllConnections() }
        }
    }

    /// How often a stop looks again for connections that have finished their
    /// exchange: short next to any grace worth setting, and one scan of the
    /// remaining (busy) connections is a few ioctls each.
    static let drainCheckInterval = Duration.milliseconds(50)

    /// One look during the grace period: close what is now between exchanges,
    /// and everything once the deadline has passed.
    private func drainStep(until deadline: Instant) {
        guard loopRunning else { return }
        if loop.now >= deadline {
            closeAllConnections()
            return
        }
        closeConnectionsBetweenExchanges()
        if table.count == 0 {
            finishShutdown()
            return
        }
        let wait = min(Self.drainCheckInterval, deadline.since(loop.now))
        loop.schedule(after: wait) { [weak self] in self?.drainStep(until: deadline) }
    }

    /// Ends every connection that is between exchanges; returns how many.
    @discardableResult
    private func closeConnectionsBetweenExchanges() -> Int {
        var closed = 0
        for connection in table.all where connection.phase != .ended && connection.isBetweenExchanges {
            connection.end(.shutdown)
            closed += 1
        }
        return closed
    }

    private func closeAllConnections() {
        for connection in table.all where connection.phase != .ended {
            connection.end(.shutdown)
        }
        if table.count == 0 { finishShutdown() }
    }

    /// The end of a shutdown; on the primary, once every worker's loop has
    /// returned too (the last one to finish calls this again).
    func finishShutdown() {
        shutdownDone = true
        guard loopRunning, workersFinished else { return }
        loopRunning = false
        closeServices()
        loop.stop()
    }

    /// Closes the metrics port and the control socket (removing its path), in
    /// the reverse order `start()` opened them. Listeners are closed first, by
    /// `beginShutdown`. Explicit, because the loop holds both handlers strongly:
    /// dropping the daemon's references alone never ran their deinit.
    func closeServices() {
        resolver?.close()
        resolver = nil
        metrics?.close()
        metrics = nil
        control?.close()
        control = nil
    }
}
