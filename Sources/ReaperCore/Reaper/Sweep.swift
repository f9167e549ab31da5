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
            sockets += examine(connection, now: started)
        }
        sweepStats.record(seconds: Instant.now().since(started).secondsAsDouble, sockets: sockets)
        publishStatus()
    }

    /// Returns the number of sockets read.
    private func examine(_ connection: Connection, now: Instant) -> Int {
        guard connection.phase == .relaying, let clientFD = connection.clientDescriptor else { return 0 }
        let settings = connection.listener.connection
        let total = connection.bytesIn &+ connection.bytesOut
        let moved = total != connection.bytesAtLastSweep
        connection.bytesAtLastSweep = total
        // Bytes moving or waiting: read every sweep, for the user-timeout evidence.
        let busy = moved || connection.holdsBytes
        var sockets = 0
        var observation = SweepObservation(
            client: nil, upstream: nil, bytesMoved: moved, idleFor: now.since(connection.lastActivity),
            halfClosedFor: connection.halfClosedAt.map { now.since($0) },
            bytesWaitingForClient: connection.bytesWaitingForClient)
        if busy || now >= connection.nextClientCheck {
            sockets += 1
            observation.client = try? TCPInfo.read(clientFD)
            if let info = observation.client {
                connection.nextClientCheck = ReapPolicy.nextCheck(
                    after: info, keepaliveIdleSeconds: settings.keepalive ? settings.keepaliveIdle : nil, now: now)
                connection.rttMicroseconds = info.rttMicroseconds
            }
            if observation.client?.isClosed ?? true { observation.clientError = Sockets.pendingError(clientFD) }
        }
        if connection.upstreamIsTCP, let upstreamFD = connection.upstreamDescriptor,
            busy || now >= connection.nextUpstreamCheck
        {
            sockets += 1
            observation.upstream = try? TCPInfo.read(upstreamFD)
            if let info = observation.upstream {
                let keepalive = settings.upstreamKeepalive && settings.keepalive
                connection.nextUpstreamCheck = ReapPolicy.nextCheck(
                    after: info, keepaliveIdleSeconds: keepalive ? settings.keepaliveIdle : nil, now: now)
            }
            if observation.upstream?.isClosed ?? false { observation.upstreamError = Sockets.pendingError(upstreamFD) }
        }

        connection.health = ReapPolicy.health(observation)
        connection.probes = max(observation.client?.probes ?? 0, observation.upstream?.probes ?? 0)
        connection.evidence.record(observation.client, bytesWaitingForClient: observation.bytesWaitingForClient)

        if let reason = ReapPolicy.decide(observation, evidence: connection.evidence, settings: settings) {
            connection.reap(reason)
        } else if connection.health == .dead {
            // Closed by the kernel after a reset or an ordinary close whose event
            // has not been handled yet: a close, not a reap.
            connection.end(.closed)
        }
        return sockets
    }
}
