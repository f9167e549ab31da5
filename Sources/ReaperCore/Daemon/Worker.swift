internal import Synchronization

/// One worker besides the primary: a `Daemon` of its own (loop, connection
/// table, sweep, pipe pool, counters) on a thread of its own.
///
/// Invariant: `daemon` is touched only on the worker's thread. The primary
/// reaches it through `mailbox` alone (posting jobs, or asking and waiting a
/// bounded time), and reads `link` (atomics and one lock) directly.
final class Worker: @unchecked Sendable {
    let index: Int
    let daemon: Daemon
    let mailbox: LoopMailbox
    let link: WorkerLink
    /// Its loop has returned (primary thread only).
    var finished = false

    init(index: Int, daemon: Daemon, mailbox: LoopMailbox, link: WorkerLink) {
        self.index = index
        self.daemon = daemon
        self.mailbox = mailbox
        self.link = link
    }

    /// The worker thread's whole life: its loop until it stops, then the
    /// primary is told.
    func run() {
        daemon.runAsWorker()
        let primary = link.primary
        let index = index
        link.primaryMailbox.post { primary.workerFinished(index) }
    }
}

/// What all workers count together, whichever of them counts.
final class ProcessWide: Sendable {
    let openConnections = OpenCount()
    /// Warnings every worker may raise about the same thing (a listener's
    /// limit or upstream, a listening socket), rate-limited together.
    let warnings = Lock(WarningLimiter())
    private let exhaustions = Atomic<Int>(0)
    /// When the last exhaustion warning went out, nanoseconds; 0: never.
    private let exhaustionWarnedAt = Atomic<UInt64>(0)

    /// Counts one failure for want of descriptors; the count since the last
    /// warning when this one should be logged (at most one per `every`, and
    /// only the worker that wins the exchange logs it), else nil.
    func exhaustionToReport(now: Instant, every: Duration) -> Int? {
        exhaustions.wrappingAdd(1, ordering: .relaxed)
        let last = exhaustionWarnedAt.load(ordering: .relaxed)
        guard last == 0 || now.since(Instant(nanoseconds: last)) >= every,
            exhaustionWarnedAt.compareExchange(expected: last, desired: now.nanoseconds, ordering: .relaxed).exchanged
        else { return nil }
        return exhaustions.exchange(0, ordering: .relaxed)
    }
}

/// What a worker and the primary share besides the mailboxes.
final class WorkerLink: @unchecked Sendable {
    // Invariant: `primary` is used only inside jobs posted to `primaryMailbox`.
    unowned(unsafe) let primary: Daemon
    let primaryMailbox: LoopMailbox
    /// The worker loop's clock at its last heartbeat, in nanoseconds: the
    /// primary pings the watchdog only while every worker's is recent.
    let heartbeat = Atomic<UInt64>(0)
    /// Its connections as of its last sweep, for the status line.
    let summary = Lock(WorkerSummary())

    init(primary: Daemon, primaryMailbox: LoopMailbox) {
        self.primary = primary
        self.primaryMailbox = primaryMailbox
        heartbeat.store(Instant.now().nanoseconds, ordering: .relaxed)
    }
}

/// A worker's contribution to `STATUS=`: what the primary's status line adds up.
struct WorkerSummary {
    var connections = 0
    var health = HealthCounts()
    var reaps: UInt64 = 0
}

/// What a worker needs to accept and relay as the primary's configuration
/// says: the settings, each listener's settings and route, and its own
/// duplicate of every listening socket. Made by the primary after a start
/// or reload has committed, so every worker takes the same, complete one.
struct WorkerView {
    struct Listener {
        let settings: ListenerSettings
        let openCount: OpenCount
        let route: UpstreamRoute?
        let configured: Bool
    }

    struct Socket {
        let key: String
        let address: String
        /// A duplicate the worker owns (and closes when a reload removes it).
        let descriptor: Int32
        let listener: String
        let activated: Bool
    }

    let configuration: Configuration
    let listeners: [Listener]
    let sockets: [Socket]
}

/// One listener's counters and connection health on one worker (or, added
/// up, on all), with the bytes of connections still open in its counters.
struct ListenerReport {
    var counters = ListenerCounters()
    var health = HealthCounts()

    mutating func add(_ other: ListenerReport) {
        counters.add(other.counters)
        health.add(other.health)
    }
}

/// What `reaperctl status` and the metrics page read, from every worker.
struct WorkersReport {
    var listeners: [String: ListenerReport] = [:]
    /// Relayed connections now, and their health (adopted ones are not in it).
    var connections = 0
    var health = HealthCounts()
    var sweep = SweepStats()
    var reaps: UInt64 = 0
    /// Workers that did not answer in time (stalled): named, never hidden.
    var unanswered: [Int] = []

    /// A listener's counters on every worker, bytes of open connections
    /// included; an adopted service's are its own (only the primary has them).
    func counters(of state: ListenerState) -> ListenerCounters {
        listeners[state.name]?.counters ?? state.counters
    }

    func health(of name: String) -> HealthCounts { listeners[name]?.health ?? HealthCounts() }

    /// ", worker 2 did not answer" when one stalled; "" otherwise.
    var unansweredText: String {
        unanswered.isEmpty ? "" : " (\(unanswered.map { "worker \($0)" }.joined(separator: ", ")) did not answer)"
    }

    mutating func add(_ other: WorkersReport) {
        for (name, report) in other.listeners { listeners[name, default: ListenerReport()].add(report) }
        connections += other.connections
        health.add(other.health)
        sweep.add(other.sweep)
        reaps += other.reaps
    }
}
