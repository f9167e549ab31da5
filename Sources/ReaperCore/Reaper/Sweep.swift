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

    mutating func record(seconds: Double, sockets: Int) {
        count += 1
        sum += seconds
        lastSeconds = seconds
        lastSockets = sockets
        for (index, bound) in Self.bucketBounds.enumerated() where seconds <= bound {
            bucketCounts[index] += 1
        }
    }
}

extension Daemon {
    func scheduleSweep() {
        sweepTimer?.cancel()
        sweepTimer = loop.schedule(after: configuration.daemon.pollInterval) { [weak self] in
            guard let self else { return }
            self.sweep()
            self.scheduleSweep()
        }
    }

    /// One pass over every connection: one TCP_INFO read per socket, health
    /// classified, reap decisions carried out. Walks the table backwards so a reap
    /// (which swaps the last entry into its slot) never skips one.
    func sweep() {
        let started = Instant.now()
        var sockets = 0
        var index = table.count - 1
        while index >= 0 {
            let connection = table.all[index]
            index -= 1
            sockets += Reaper.examine(connection, now: started)
            store.storeIfDue(connection, now: started, minimumAge: configuration.daemon.fdStoreMinAge)
        }
        sockets += sweepServices(now: started)
        sweepStats.record(seconds: Instant.now().since(started).secondsAsDouble, sockets: sockets)
        publishStatus()
    }
}

/// The reaper's look at one connection, apart from the daemon so in-process
/// tests run the very same sweep against a connection they drive.
enum Reaper {
    /// Returns the number of sockets read. The sweep reads and classifies; what
    /// the kernel says about a socket the connection itself acts on (`inspect`),
    /// and the sweep reaps only for reaperd's own limits.
    static func examine(_ connection: Connection, now: Instant) -> Int {
        guard connection.phase == .relaying, connection.clientDescriptor != nil else { return 0 }
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
        guard connection.phase == .relaying else { return sockets }

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
        return sockets
    }
}
