/// `workers = N`: the primary starts N - 1 more daemons, each on its own
/// thread with its own loop, and keeps them in step.
///
/// Nothing on the data path is shared. Every worker watches every listening
/// socket with EPOLLEXCLUSIVE, so the kernel wakes one of them per client,
/// and a connection lives and dies on the worker that accepted it. What
/// crosses threads is the control plane: a view of the configuration after
/// each start and reload, a listener's new route after a lookup, shutdown,
/// and the operator's questions (connections, reap, status, metrics), each
/// through the target loop's mailbox. The two `max_connections` limits are
/// atomic counters every worker takes from.
extension Daemon {
    /// Starts the other workers, once listeners are open and stored
    /// connections recovered (those stay on the primary).
    func startWorkers() throws(SystemError) {
        guard workerCount > 1 else { return }
        let own = try LoopMailbox(loop: loop)
        mailbox = own
        for index in 1..<workerCount {
            let daemon = try Daemon(workerOf: self, index: index)
            let workerMailbox = try LoopMailbox(loop: daemon.loop)
            let link = WorkerLink(primary: self, primaryMailbox: own)
            daemon.mailbox = workerMailbox
            daemon.link = link
            daemon.heartbeatEvery = notifier.watchdogPingInterval
            if store.isEnabled { daemon.workerStore = WorkerStore(link: link) }
            // Connection ids stay unique: worker k of n numbers k, k + n, ...
            daemon.nextConnectionID = nextConnectionID + UInt64(index)
            // Before its thread starts, nothing else touches it: taken directly.
            daemon.take(view())
            let worker = Worker(index: index, daemon: daemon, mailbox: workerMailbox, link: link)
            workers.append(worker)
            try Threads.startDetached(name: "reaperd-w\(index)") { worker.run() }
        }
    }

    /// A worker's thread: its loop, until its shutdown stops it.
    func runAsWorker() {
        scheduleHeartbeat()
        armSweep()
        do {
            try loop.run()
        } catch {
            logger.error("worker \(workerIndex) stopped: \(error)", [("REAPERD_WORKER", "\(workerIndex)")])
        }
        mailbox?.close()
        loop.discardPending()
    }

    /// The worker's loop proves it turns: a timer that records the time.
    private func scheduleHeartbeat() {
        guard let interval = heartbeatEvery, let link else { return }
        func beat() {
            link.heartbeat.store(Instant.now().nanoseconds, ordering: .relaxed)
            loop.schedule(after: interval) { beat() }
        }
        beat()
    }

    /// The primary's watchdog ping goes out only while every worker's
    /// heartbeat is younger than two ping intervals: a stalled worker stops
    /// the pings, and systemd restarts reaperd as it would for a stalled primary.
    func stalledWorker(within interval: Duration) -> Int? {
        let now = Instant.now()
        for worker in workers where !worker.finished {
            let beat = Instant(nanoseconds: worker.link.heartbeat.load(ordering: .relaxed))
            if now.since(beat) > interval + interval { return worker.index }
        }
        return nil
    }

    // MARK: Configuration, in step

    /// What every worker needs after a start or reload: built on the primary.
    func view() -> WorkerView {
        let states = orderedListeners.map {
            WorkerView.Listener(
                settings: $0.settings, openCount: $0.openCount, route: $0.route, configured: $0.configured)
        }
        var sockets: [WorkerView.Socket] = []
        for endpoint in endpoints {
            do {
                let copy = try Files.duplicate(endpoint.socket.raw)
                sockets.append(
                    WorkerView.Socket(
                        key: endpoint.key, address: endpoint.address, descriptor: copy.release(),
                        listener: endpoint.listener.name, activated: endpoint.activated))
            } catch {
                // Out of descriptors: that worker does not accept there; the others do.
                logger.error(
                    "a worker cannot watch listener \(endpoint.listener.name) \(endpoint.address): \(error)",
                    [("REAPERD_LISTENER", endpoint.listener.name), ("REAPERD_ERROR", "\(error)")])
            }
        }
        return WorkerView(configuration: configuration, listeners: states, sockets: sockets)
    }

    /// A worker takes a view: settings and routes as the primary has them
    /// (connections whose settings changed get them, as on the primary), and
    /// its listening sockets replaced by the view's.
    func take(_ view: WorkerView) {
        configuration = view.configuration
        for item in view.listeners {
            let state: ListenerState
            if let known = listeners[item.settings.name] {
                state = known
                applyListenerSettings(item.settings, to: state)
            } else {
                state = ListenerState(settings: item.settings, openCount: item.openCount)
                listeners[item.settings.name] = state
                listenerOrder.append(item.settings.name)
            }
            state.configured = item.configured
            state.route = item.route
        }
        for endpoint in endpoints {
            endpoint.pause?.cancel()
            endpoint.pause = nil
            // EPOLL_CTL_DEL first: the socket stays open in the other
            // workers, and epoll forgets a descriptor only once all are closed.
            if let registration = endpoint.registration { loop.deregister(registration) }
            endpoint.registration = nil
        }
        endpoints = view.sockets.compactMap { socket in
            guard let state = listeners[socket.listener] else {
                FileDescriptor(owning: socket.descriptor).close()
                return nil
            }
            return ListeningEndpoint(
                key: socket.key, address: socket.address, socket: FileDescriptor(owning: socket.descriptor),
                listener: state, activated: socket.activated, daemon: self)
        }
        if !stopping {
            for endpoint in endpoints { updateWatch(endpoint) }
        }
        rearmSweep()
    }

    /// After a reload has committed on the primary: every worker takes it.
    func shareView() {
        for worker in workers where !worker.finished {
            let view = view()
            let daemon = worker.daemon
            worker.mailbox.post { daemon.take(view) }
        }
    }

    /// A lookup changed where a listener's new connections go.
    func shareRoute(_ state: ListenerState) {
        let name = state.name
        let route = state.route
        for worker in workers where !worker.finished {
            let daemon = worker.daemon
            worker.mailbox.post { daemon.listeners[name]?.route = route }
        }
    }

    // MARK: Shutdown

    /// SIGTERM reaches the workers: each stops accepting and drains its own
    /// connections as the primary does its own.
    func shareShutdown(signal: String) {
        for worker in workers where !worker.finished {
            let daemon = worker.daemon
            worker.mailbox.post { daemon.beginShutdown(signal: signal) }
        }
    }

    /// A worker's loop has returned.
    func workerFinished(_ index: Int) {
        workers.first { $0.index == index }?.finished = true
        if shutdownDone { finishShutdown() }
    }

    var workersFinished: Bool { workers.allSatisfy(\.finished) }

    // MARK: Reports

    /// A worker's part of STATUS=, written after each of its sweeps; the
    /// primary is told to publish the new line.
    func reportSummary() {
        guard let link else { return }
        var health = HealthCounts()
        for connection in table.all { health[connection.health] += 1 }
        let summary = WorkerSummary(connections: table.count, health: health, reaps: reapsSinceStart)
        link.summary.withLock { $0 = summary }
        let primary = link.primary
        link.primaryMailbox.post { primary.publishStatus() }
    }

    /// Every worker's summary added up (the primary's own table and services are not in it).
    func workerSummaries() -> WorkerSummary {
        var total = WorkerSummary()
        for worker in workers {
            let summary = worker.link.summary.withLock { $0 }
            total.connections += summary.connections
            total.health.add(summary.health)
            total.reaps += summary.reaps
        }
        return total
    }

    /// Connections on every worker, as of each one's last sweep.
    var totalConnections: Int { table.count + workerSummaries().connections }

    /// This worker's counters, health and sweeps, on its own thread.
    func localReport() -> WorkersReport {
        var report = WorkersReport()
        for state in orderedListeners {
            report.listeners[state.name] = ListenerReport(counters: state.counters)
        }
        for connection in table.all {
            var entry = report.listeners[connection.listener.name, default: ListenerReport()]
            entry.counters.bytesIn &+= connection.bytesIn
            entry.counters.bytesOut &+= connection.bytesOut
            entry.health[connection.health] += 1
            report.listeners[connection.listener.name] = entry
        }
        report.connections = table.count
        for connection in table.all { report.health[connection.health] += 1 }
        report.sweep = sweepStats
        report.reaps = reapsSinceStart
        return report
    }

    /// Every worker's report added up; a worker that does not answer within
    /// two seconds is named in `unanswered` instead of holding the answer.
    func gatherReport() -> WorkersReport {
        var report = localReport()
        for worker in workers where !worker.finished {
            let daemon = worker.daemon
            if let theirs = worker.mailbox.ask({ daemon.localReport() }) {
                report.add(theirs)
            } else {
                report.unanswered.append(worker.index)
            }
        }
        return report
    }

    /// Asks every other worker; the answers in worker order, or the first
    /// worker that did not answer in time.
    func askWorkers<Answer>(_ question: @escaping (Daemon) -> Answer) -> Result<[Answer], StalledWorker> {
        var answers: [Answer] = []
        for worker in workers where !worker.finished {
            let daemon = worker.daemon
            guard let answer = worker.mailbox.ask({ question(daemon) }) else {
                return .failure(StalledWorker(index: worker.index))
            }
            answers.append(answer)
        }
        return .success(answers)
    }
}

/// A worker that did not answer a question from the primary within its deadline.
struct StalledWorker: Error {
    let index: Int
    var message: String { "worker \(index) did not answer within 2 s (stalled?)" }
}
