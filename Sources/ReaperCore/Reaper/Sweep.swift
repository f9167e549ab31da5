/// How long sweeps take: `reaperd_sweep_seconds` as a histogram with fixed
/// buckets, so recording allocates nothing.
public struct SweepStats: Sendable {
    public static let bucketBounds: [Double] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1]
    public var bucketCounts = [UInt64](repeating: 0, count: 9)
    public var count: UInt64 = 0
    public var sum: Double = 0
    public var lastSeconds: Double = 0
    /// Sockets examined by the last sweep (`reaperd_sweep_connections`).
    public var lastSockets = 0
    /// Connections the sweeps looked at since start (`reaperd_sweep_looks_total`):
    /// idle connections are looked at once per `keepalive_idle`, not every sweep.
    public var looks: UInt64 = 0

    /// Adds another worker's sweeps: counts and sums add up, the last sweep
    /// is each worker's last (sockets added, the longest time kept).
    mutating func add(_ other: SweepStats) {
        count += other.count
        sum += other.sum
        lastSeconds = max(lastSeconds, other.lastSeconds)
        lastSockets += other.lastSockets
        looks += other.looks
        for index in bucketCounts.indices { bucketCounts[index] += other.bucketCounts[index] }
    }

    mutating func record(seconds: Double, sockets: Int, looked: Int) {
        count += 1
        sum += seconds
        lastSeconds = seconds
        lastSockets = sockets
        looks += UInt64(looked)
        for (index, bound) in Self.bucketBounds.enumerated() where seconds <= bound {
            bucketCounts[index] += 1
        }
    }
}

/// When the sweep runs. Not on a fixed tick: each connection is queued for
/// its next look (`Reaper.nextLook`), and the loop sleeps until the earliest,
/// so 10 000 idle connections wake the daemon about once per
/// `keepalive_idle` each rather than all of them every `poll_interval`. Sweeps
/// stay at least `poll_interval` apart: it is the reaper's resolution, and
/// what bounds its work while bytes move.
extension Daemon {
    /// Arms the sweep timer for the earliest due connection, the adopted
    /// services (read every `poll_interval`), or a status line gone stale; an
    /// earlier timer already armed stays.
    func armSweep() {
        let soonest = lastSweepAt.adding(configuration.daemon.pollInterval)
        var next = sweepQueue.earliest
        if statusStale || !services.isEmpty { next = min(next ?? soonest, soonest) }
        guard let next else { return }
        let at = max(next, soonest)
        if let armed = sweepTimer, !armed.isCancelled, armed.deadline <= at { return }
        sweepTimer?.cancel()
        sweepTimer = loop.schedule(at: at) { [weak self] in
            guard let self else { return }
            self.sweepTimer = nil
            self.sweep()
            self.armSweep()
        }
    }

    /// After a reload (a new poll interval, services added or removed): the
    /// timer is armed afresh.
    func rearmSweep() {
        sweepTimer?.cancel()
        sweepTimer = nil
        armSweep()
    }

    // MARK: The sweep's queue

    /// Established, recovered, moving bytes or half-closed: the next sweep looks.
    func sweepSoon(_ connection: Connection) {
        guard connection.phase == .relaying, connection.tableIndex >= 0 else { return }
        connection.watch.dueNextSweep = true
        sweepQueue.schedule(connection, at: loop.now)
        armSweep()
    }

    /// The connection ended: out of the queue, and the status line (its
    /// count) is refreshed by a sweep within `poll_interval`.
    func sweepForget(_ connection: Connection) {
        sweepQueue.remove(connection)
        connection.watch.dueNextSweep = false
        statusStale = true
        armSweep()
    }

    /// One pass over the connections that are due: one TCP_INFO read per
    /// socket that could have changed, health classified, reap decisions
    /// carried out, each connection queued again for its next look.
    func sweep() {
        let started = Instant.now()
        lastSweepAt = started
        statusStale = false
        let daemon = configuration.daemon
        var sockets = 0
        var looked = 0
        while let connection = sweepQueue.popDue(now: started) {
            looked += 1
            let look = Reaper.examine(connection, now: started)
            sockets += look.sockets
            storeIfDue(connection, now: started)
            // An examined connection may have ended (reaped, reset finished).
            guard connection.phase == .relaying, connection.tableIndex >= 0 else { continue }
            connection.watch.dueNextSweep = look.busy
            let due = Reaper.nextLook(
                connection, busy: look.busy, now: started, pollInterval: daemon.pollInterval,
                storeAt: storeDue(connection))
            sweepQueue.schedule(connection, at: due)
        }
        sockets += sweepServices(now: started)
        sweepStats.record(seconds: Instant.now().since(started).secondsAsDouble, sockets: sockets, looked: looked)
        publishStatus()
    }
}

/// The reaper's look at one connection, apart from the daemon so in-process
/// tests run the very same sweep against a connection they drive.
enum Reaper {
    /// What one look found: sockets read, and whether the connection is busy
    /// (bytes moved since the last look, or wait in reaperd), which brings it
    /// back at the next sweep.
    struct Look {
        var sockets = 0
        var busy = false
    }

    /// The sweep reads and classifies; what the kernel says about a socket the
    /// connection itself acts on (`inspect`), and the sweep reaps only for
    /// reaperd's own limits.
    @discardableResult
    static func examine(_ connection: Connection, now: Instant) -> Look {
        guard connection.phase == .relaying, connection.clientDescriptor != nil else { return Look() }
        let settings = connection.listener.connection
        var watch = connection.watch
        let total = connection.bytesIn &+ connection.bytesOut
        var moved = total != watch.bytesAtLastSweep
        watch.bytesAtLastSweep = total
        // Bytes moving or waiting: read every sweep, for the user-timeout evidence.
        let busy = moved || connection.holdsBytes
        var sockets = 0
        var client: TCPInfo?
        var upstream: TCPInfo?
        if busy || now >= watch.nextClientCheck {
            sockets += 1
            client = connection.inspect(.client)
            if let info = client {
                watch.nextClientCheck = ReapPolicy.nextCheck(
                    after: info, keepaliveIdleSeconds: settings.keepalive ? settings.keepaliveIdle : nil, now: now)
                watch.rttMicroseconds = info.rttMicroseconds
                if watch.noteKernelBytes(info, upstream: false, now: now) { moved = true }
            }
        }
        if connection.upstreamIsTCP, connection.phase == .relaying, busy || now >= watch.nextUpstreamCheck {
            sockets += 1
            upstream = connection.inspect(.upstream)
            if let info = upstream {
                let keepalive = settings.upstreamKeepalive && settings.keepalive
                watch.nextUpstreamCheck = ReapPolicy.nextCheck(
                    after: info, keepaliveIdleSeconds: keepalive ? settings.keepaliveIdle : nil, now: now)
                if watch.noteKernelBytes(info, upstream: true, now: now) { moved = true }
            }
        }
        // `inspect` may have ended it (a dead peer reaped, a reset finished).
        guard connection.phase == .relaying else { return Look(sockets: sockets) }

        let silence = ReapPolicy.Silence(
            relayMovedAt: connection.lastActivity, kernelMovedAt: watch.kernelMovedAt,
            halfClosedAt: connection.halfClosedAt, now: now)
        let observation = SweepObservation(
            client: client, upstream: upstream, faulted: connection.hasFault, bytesMoved: moved,
            idleFor: silence.idleFor, halfCloseSilence: silence.afterHalfClose,
            bytesWaitingForClient: connection.bytesWaitingForClient)
        watch.health = ReapPolicy.health(observation)
        watch.probes = max(client?.probes ?? 0, upstream?.probes ?? 0)
        watch.evidence.record(client, bytesWaitingForClient: observation.bytesWaitingForClient)
        connection.watch = watch
        if let reason = ReapPolicy.decide(observation, settings: settings) { connection.reap(reason) }
        return Look(sockets: sockets, busy: busy || moved)
    }

    /// When the sweep next needs to look at a connection it has just looked
    /// at: the next sweep while it is busy (or a socket has probes out or data
    /// in flight, `ReapPolicy.nextCheck`); otherwise the first of its sockets'
    /// next reads, its idle and half-close deadlines, and its turn for the
    /// descriptor store. Never sooner than the next sweep.
    static func nextLook(
        _ connection: Connection, busy: Bool, now: Instant, pollInterval: Duration, storeAt: Instant?
    ) -> Instant {
        let soonest = now.adding(pollInterval)
        if busy { return soonest }
        let watch = connection.watch
        let settings = connection.listener.connection
        var due = watch.nextClientCheck
        if connection.upstreamIsTCP { due = min(due, watch.nextUpstreamCheck) }
        let lastMoved = max(connection.lastActivity, watch.kernelMovedAt)
        if settings.idleTimeout > .zero { due = min(due, lastMoved.adding(settings.idleTimeout)) }
        if settings.halfCloseTimeout > .zero, let halfClosed = connection.halfClosedAt {
            due = min(due, max(halfClosed, lastMoved).adding(settings.halfCloseTimeout))
        }
        if let storeAt { due = min(due, storeAt) }
        return max(due, soonest)
    }
}
