internal import Glibc

/// The running daemon: listeners, connections, the reaper's sweep, signals,
/// the control socket and the metrics page, all on one event loop.
///
/// With `workers = N` the process runs N of these, one per thread. The first,
/// the primary, is the one above: it alone binds, reloads, speaks to systemd,
/// serves the control socket and the metrics page, resolves names and runs
/// adopt mode and the descriptor store. Every one of them, the primary
/// included, accepts from the same listening sockets and relays and sweeps
/// only its own connections (Daemon+Workers).
public final class Daemon: ConnectionOwner {
    public let loop: EventLoop
    let pipes = PipePool()
    public let logger: Logger
    let notifier: any ServiceNotifier
    /// The file reload re-reads; nil when running on the embedded default.
    let configPath: String?
    public internal(set) var configuration: Configuration

    /// Every listener seen since start, by name; removed ones stay for counters
    /// and for their remaining connections.
    var listeners: [String: ListenerState] = [:]
    var listenerOrder: [String] = []
    var endpoints: [ListeningEndpoint] = []
    var table = ConnectionTable()
    var nextConnectionID: UInt64 = 1
    /// Sockets a socket unit passed, by `FileDescriptorName=`.
    var activated: [ActivatedSocket]
    /// systemd's file descriptor store: what is kept there across restarts.
    let store: ConnectionStore
    /// Adopt mode's services by name, in file order (Daemon+Adopt).
    var services: [String: AdoptedService] = [:]
    var serviceOrder: [String] = []
    /// The host name lookup thread, started when an upstream is first a name (Daemon+Resolve).
    var resolver: Resolver?
    var sockDiag: SockDiag?
    var cgroupMount: String?

    var sweepTimer: LoopTimer?
    /// Connections by when the sweep next looks at them (Sweep.swift).
    var sweepQueue = SweepQueue<Connection>()
    var lastSweepAt = Instant(nanoseconds: 0)
    /// A connection ended since the last sweep: the status line's count is old.
    var statusStale = false
    var sweepStats = SweepStats()
    var reapsSinceStart: UInt64 = 0
    var lastStatus = ""
    var lastReloadError: String?
    /// When the running configuration was loaded (start, or the last reload that applied), wall clock.
    var configLoadedAtWallClock = ProcessStats.wallClock()
    let startedAtWallClock = ProcessStats.wallClock()
    /// Every endpoint unwatched for a moment: out of descriptors (Daemon+Accept).
    var acceptPaused = false
    var stopping = false
    var loopRunning = true
    var signals: SignalHandler?
    var control: ControlServer?
    var metrics: MetricsServer?
    let startedAt = Instant.now()

    /// 0 for the primary; 1 ..< workerCount for the other workers.
    let workerIndex: Int
    /// How many workers accept and relay, the primary included.
    var workerCount = 1
    /// The primary's: every other worker. Empty in a worker, and with one.
    var workers: [Worker] = []
    /// What other threads hand this daemon's loop; nil with one worker.
    var mailbox: LoopMailbox?
    /// A worker's link to the primary: its heartbeat, summary and mailbox.
    /// `primary` is used only inside jobs posted to `primaryMailbox`, which
    /// run on the primary's thread.
    var link: WorkerLink?
    /// What every worker counts together: open connections (the daemon's
    /// `max_connections`) and descriptor exhaustion (a per-process limit).
    let processWide: ProcessWide
    var openConnections: OpenCount { processWide.openConnections }
    /// The primary's shutdown is done but for workers still draining.
    var shutdownDone = false
    /// A worker's way to the primary's descriptor store, when it is in use.
    var workerStore: WorkerStore?
    /// A worker's heartbeat period: the watchdog's ping interval, nil without one.
    var heartbeatEvery: Duration?

    var isPrimary: Bool { workerIndex == 0 }

    public init(
        configuration: Configuration, configPath: String?, logger: Logger, notifier: any ServiceNotifier,
        activated: [ActivatedSocket] = [], store channel: (any DescriptorStore)? = nil, storeCapacity: Int? = nil
    ) throws(SystemError) {
        self.configuration = configuration
        self.configPath = configPath
        self.logger = logger
        self.notifier = notifier
        store = ConnectionStore(channel: channel, capacity: storeCapacity, logger: logger)
        // What came back from the store stays with it; a socket unit's
        // sockets of the wrong kind are refused by start().
        self.activated = store.receive(activated)
        loop = try EventLoop()
        workerIndex = 0
        processWide = ProcessWide()
        notifier.attach(to: loop)
        store.attach(to: loop)
    }

    /// Worker `index` of `primary`: its own loop, connections, sweep and
    /// pipes; nothing of systemd, the store, the control socket or adopt mode.
    init(workerOf primary: Daemon, index: Int) throws(SystemError) {
        configuration = primary.configuration
        configPath = nil
        logger = primary.logger
        notifier = SilentNotifier()
        store = ConnectionStore(channel: nil, capacity: nil, logger: primary.logger)
        activated = []
        loop = try EventLoop()
        workerIndex = index
        workerCount = primary.workerCount
        processWide = primary.processWide
    }

    var maxConnections: Int { configuration.daemon.maxConnections }

    /// Binds every listener, the control socket and the metrics port, then tells
    /// systemd READY=1. Any failure here is fatal and names what failed.
    public func start() throws(StartError) {
        try refuseWrongKindListeners()
        let signalHandler: SignalHandler
        do {
            signalHandler = try SignalHandler(daemon: self)
            try signalHandler.register(on: loop)
        } catch {
            throw StartError(message: "signals: \(error)", errno: error.errno.code)
        }
        signals = signalHandler
        // Before the listening sockets are watched: with more than one worker
        // they are watched exclusively.
        workerCount = configuration.daemon.workers.resolve()
        do {
            try applyListeners(configuration)
        } catch {
            throw StartError(message: error.message, errno: error.errno, isConfiguration: error.isConfiguration)
        }
        do {
            control = try ControlServer(path: configuration.daemon.controlSocket, daemon: self)
        } catch {
            throw StartError(
                message: "control socket \(configuration.daemon.controlSocket): \(error)", errno: error.errno.code)
        }
        if let address = configuration.daemon.metrics {
            do {
                metrics = try MetricsServer(endpoint: address, daemon: self)
            } catch {
                closeServices()
                throw StartError(message: "metrics \(address): \(error.failure)", errno: error.failure.errno.code)
            }
        }
        do {
            try startServices()
        } catch {
            closeServices()
            throw error
        }
        store.releaseUnadoptedListeners()
        recoverStoredConnections()
        do {
            try startWorkers()
        } catch {
            closeServices()
            throw StartError(message: "workers: \(error)", errno: error.errno.code)
        }
        armSweep()
        let metricsAt = metrics.map { "http://\($0.address)/metrics" } ?? "off"
        logger.info(
            "reaperd started: control socket \(configuration.daemon.controlSocket), metrics \(metricsAt)",
            [
                ("REAPERD_CONFIG", configSourceDescription),
                ("REAPERD_LISTENERS", endpoints.map { "\($0.listener.name)=\($0.address)" }.joined(separator: ",")),
                ("REAPERD_SERVICES", serviceOrder.joined(separator: ",")),
                ("REAPERD_CONTROL_SOCKET", configuration.daemon.controlSocket), ("REAPERD_METRICS", metricsAt),
                ("REAPERD_WORKERS", "\(workerCount)"),
            ], event: .start)
        for line in configuration.advice() { logger.info(line) }
        notifier.ready(status: statusLine())
        // After READY=1, so the service manager hears READY=1 first.
        scheduleWatchdog()
    }

    var configSourceDescription: String {
        switch configuration.source {
        case .file(let path): path
        case .embeddedDefault: "embedded default"
        }
    }

    /// Runs until SIGTERM/SIGINT and the drain are done.
    public func run() throws(SystemError) {
        try loop.run()
    }

    // MARK: ConnectionOwner

    func connectionEstablished(_ connection: Connection) {
        // With a minimum age the sweep stores it once it has lived that long.
        if configuration.daemon.fdStoreMinAge == .zero { storeConnection(connection) }
        sweepSoon(connection)
    }

    func connectionClosing(_ connection: Connection) {
        if let workerStore { workerStore.unstore(connection) } else { store.unstore(connection) }
    }

    func isStored(_ connection: Connection) -> Bool {
        workerStore?.isStored(connection) ?? store.isStored(connection)
    }

    // MARK: The descriptor store, the primary's or through it

    /// Whether connections go to systemd's store: the primary's, which a
    /// worker reaches through `workerStore`.
    var storesConnections: Bool { workerStore != nil || store.isEnabled }

    func storeConnection(_ connection: Connection) {
        if let workerStore { workerStore.store(connection) } else { store.store(connection, now: loop.now) }
    }

    func storeIfDue(_ connection: Connection, now: Instant) {
        let age = configuration.daemon.fdStoreMinAge
        if let workerStore {
            workerStore.storeIfDue(connection, now: now, minimumAge: age)
        } else {
            store.storeIfDue(connection, now: now, minimumAge: age)
        }
    }

    func storeDue(_ connection: Connection) -> Instant? {
        let age = configuration.daemon.fdStoreMinAge
        return workerStore?.storeDue(connection, minimumAge: age) ?? store.storeDue(connection, minimumAge: age)
    }

    func connection(_ connection: Connection, endedWith end: ConnectionEnd) {
        table.remove(connection)
        sweepForget(connection)
        let listener = connection.listener
        openConnections.give()
        listener.openCount.give()
        listener.counters.bytesIn += connection.bytesIn
        listener.counters.bytesOut += connection.bytesOut
        switch end {
        case .closed, .shutdown:
            listener.counters.closed += 1
            if logger.isEnabled(.debug) {
                logger.debug("connection closed", connectionFields(connection, now: loop.now))
            }
        case .upstreamFailed(let why):
            listener.counters.refusedUpstream += 1
            // One line a second per listener at most: a dead upstream must not
            // flood the journal, nor hide another listener's.
            warnRefused(connection, "upstream unreachable, client closed", why, kind: "upstream", every: .seconds(1))
        case .badProxyHeader(let why):
            listener.counters.refusedProxyHeader += 1
            warnRefused(
                connection, "client refused: no valid PROXY protocol header", why, kind: "proxy", every: .seconds(10))
        case .reaped(let reason):
            listener.counters.reaped[reason, default: 0] += 1
            reapsSinceStart += 1
            logReap(connection, reason)
        }
        if stopping && table.count == 0 { finishShutdown() }
    }

    /// A connection refused for `kind` of reason, logged at most once per
    /// `every` per listener, with how many were not logged meanwhile.
    private func warnRefused(_ connection: Connection, _ message: String, _ why: String, kind: String, every: Duration)
    {
        let listener = connection.listener
        guard let suppressed = allowWarning("\(kind):\(listener.name)", every: every) else { return }
        logger.warning(
            message,
            [
                ("REAPERD_LISTENER", listener.name), ("REAPERD_PEER", "\(connection.peer)"), ("REAPERD_ERROR", why),
                ("REAPERD_SUPPRESSED", "\(suppressed)"),
            ])
    }

    /// Per listener and reason (upstream unreachable, refused at a limit), for
    /// every worker together: one line per period, with how many were held back.
    func allowWarning(_ key: String, every period: Duration) -> Int? {
        processWide.warnings.withLock { $0.allow(key, now: loop.now, every: period) }
    }

    func connectionFields(_ connection: Connection, now: Instant) -> [(name: String, value: String)] {
        var fields: [(name: String, value: String)] = [
            ("REAPERD_CONNECTION_ID", "\(connection.id)"),
            ("REAPERD_LISTENER", connection.listener.name),
            ("REAPERD_PEER", "\(connection.peer)"),
            ("REAPERD_UPSTREAM", connection.upstreamAddress.map { "\($0)" } ?? "echo"),
            ("REAPERD_AGE_SEC", "\(now.since(connection.startedAt).components.seconds)"),
            ("REAPERD_IDLE_SEC", "\(now.since(connection.lastActivity).components.seconds)"),
            ("REAPERD_BYTES_IN", "\(connection.bytesIn)"),
            ("REAPERD_BYTES_OUT", "\(connection.bytesOut)"),
            ("REAPERD_PROBES", "\(connection.probes)"),
        ]
        if let name = connection.upstreamName { fields.append(("REAPERD_UPSTREAM_NAME", name)) }
        if let local = connection.upstreamLocal { fields.append(("REAPERD_UPSTREAM_LOCAL", "\(local)")) }
        if let via = connection.proxiedVia { fields.append(("REAPERD_VIA", "\(via)")) }
        return fields
    }

    private func logReap(_ connection: Connection, _ reason: ReapReason) {
        let now = Instant.now()
        let age = now.since(connection.startedAt).components.seconds
        let why: String
        switch reason {
        case .keepalive: why = "keepalive probes went unanswered"
        case .userTimeout: why = "data stayed unacknowledged past the user timeout"
        case .idleTimeout: why = "no bytes moved for the idle timeout"
        case .halfCloseTimeout: why = "one side stayed half-closed past the timeout"
        case .upstreamDead: why = "the upstream side died"
        case .admin: why = "an operator asked for it"
        case .crashLoss: why = "\(connection.lostInOldProcess) bytes died inside the process before a crash"
        }
        var fields = connectionFields(connection, now: now)
        fields.insert(("REAPERD_REASON", reason.rawValue), at: 4)
        if reason == .crashLoss { fields.append(("REAPERD_LOST_BYTES", "\(connection.lostInOldProcess)")) }
        logger.notice(
            "reaped connection \(connection.id) from \(connection.peer) on \(connection.listener.name) after \(age)s: \(why)",
            fields, event: .reap)
    }

    /// "12 connections (10 idle, 1 active, 1 probing, 0 dead), 3 reaped since start",
    /// every worker's connections counted (each as of its last sweep).
    ///
    /// For STATUS= the other workers count as of their last sweep (their
    /// summaries); `reaperctl status` passes a report gathered just now.
    func statusLine(_ report: WorkersReport? = nil) -> String {
        let others = workerSummaries()
        let total = report?.connections ?? (table.count + others.connections)
        if stopping { return "stopping: \(total) connections draining" }
        var counts = serviceHealthCounts()
        counts.add(report?.health ?? others.health)
        if report == nil { counts.add(localHealthCounts()) }
        let reaps = report?.reaps ?? (reapsSinceStart + others.reaps)
        var line =
            "\(total) connections (\(counts[.active]) active, \(counts[.idle]) idle, "
            + "\(counts[.probing]) probing, \(counts[.dead]) dead), \(reaps) reaped since start"
        if let lastReloadError { line += "; last reload failed: \(lastReloadError)" }
        return line
    }

    func publishStatus() {
        // A worker's line is part of the primary's, which alone tells systemd.
        guard isPrimary else { return reportSummary() }
        let line = statusLine()
        guard line != lastStatus else { return }
        lastStatus = line
        notifier.status(line)
    }

    private func scheduleWatchdog() {
        guard let interval = notifier.watchdogPingInterval else { return }
        // Sent from a loop timer: a loop that stops turning stops the pings,
        // and so does a worker whose loop stopped turning (its heartbeat).
        var withheld: Int?
        func ping() {
            let stalled = stalledWorker(within: interval)
            if let stalled, withheld != stalled {
                logger.error(
                    "worker \(stalled) has stopped turning; the watchdog ping is withheld",
                    [("REAPERD_WORKER", "\(stalled)")])
            }
            withheld = stalled
            if stalled == nil { notifier.watchdogPing() }
            loop.schedule(after: interval) { ping() }
        }
        ping()
    }
}

/// A start-up failure: what to print, and the errno for systemd's `ERRNO=`.
public struct StartError: Error, CustomStringConvertible {
    public let message: String
    public let errno: Int32
    /// The configuration cannot work as written (exit 78, so systemd does not
    /// restart into the same failure).
    public var isConfiguration = false
    public var description: String { message }
}
