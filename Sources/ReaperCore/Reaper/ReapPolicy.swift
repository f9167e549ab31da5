/// What one sweep knows about a connection: pure data, so the decision is a
/// pure function that unit tests can drive without sockets.
public struct SweepObservation: Sendable {
    public var client: TCPInfo?
    /// nil for a Unix upstream, or before the upstream is connected.
    public var upstream: TCPInfo?
    /// The kernel reported an error on a side (a reset, a broken pipe); the
    /// connection is delivering what it still can before it closes.
    public var faulted: Bool
    /// Bytes moved either way since the previous sweep.
    public var bytesMoved: Bool
    /// Time since bytes last moved either way.
    public var idleFor: Duration
    /// After one side's FIN: how long the open direction has been silent.
    public var halfCloseSilence: Duration?
    /// reaperd itself holds bytes it could not yet deliver to the client.
    public var bytesWaitingForClient: Bool

    public init(
        client: TCPInfo?, upstream: TCPInfo?, faulted: Bool = false, bytesMoved: Bool, idleFor: Duration,
        halfCloseSilence: Duration? = nil, bytesWaitingForClient: Bool = false
    ) {
        self.client = client
        self.upstream = upstream
        self.faulted = faulted
        self.bytesMoved = bytesMoved
        self.idleFor = idleFor
        self.halfCloseSilence = halfCloseSilence
        self.bytesWaitingForClient = bytesWaitingForClient
    }
}

/// Evidence kept between sweeps: whether data was seen in flight toward the
/// client. A socket the kernel has just killed reports little, so the verdict
/// `keepalive` vs `user-timeout` rests on what earlier sweeps saw too.
public struct ReapEvidence: Sendable, Equatable {
    public var sawDataInFlight = false
    public var sawProbes = false
    public init() {}

    public mutating func record(_ client: TCPInfo?, bytesWaitingForClient: Bool) {
        guard let client, client.isEstablished else { return }
        if client.hasDataInFlight || bytesWaitingForClient {
            sawDataInFlight = true
        } else if client.probes == 0 {
            // Everything acknowledged: earlier retransmissions were answered.
            sawDataInFlight = false
        }
        if client.probes > 0 { sawProbes = true }
    }
}

/// Health classification and the reaper's own reap decisions (SPEC §5). What
/// the kernel says about a socket (a reset, a dead peer, an orderly close) is
/// decided by the connection itself (`Connection.kernelReports`): this only
/// classifies, and reaps for the limits the kernel does not enforce.
public enum ReapPolicy {
    /// `dead`: a side failed and the connection is only finishing. A socket in
    /// `TCP_CLOSE` with no error is an orderly end (both FINs exchanged) whose
    /// last bytes may still be on their way: that connection is `active` or
    /// `idle` like any other until it has delivered them.
    public static func health(_ observation: SweepObservation) -> Health {
        if observation.faulted { return .dead }
        if let client = observation.client, client.isEstablished, client.probes > 0 { return .probing }
        if let upstream = observation.upstream, upstream.isEstablished, upstream.probes > 0 { return .probing }
        return observation.bytesMoved ? .active : .idle
    }

    /// The reason to reap now for a limit of reaperd's own, or nil to let the
    /// connection live.
    public static func decide(_ observation: SweepObservation, settings: ConnectionSettings) -> ReapReason? {
        if settings.idleTimeout > .zero && !observation.bytesMoved && observation.idleFor >= settings.idleTimeout {
            return .idleTimeout
        }
        if settings.halfCloseTimeout > .zero, let silence = observation.halfCloseSilence,
            silence >= settings.halfCloseTimeout
        {
            return .halfCloseTimeout
        }
        return nil
    }

    /// How long a connection has been silent. A byte moved when reaperd moved
    /// it, or when the kernel's byte counters on either socket changed: bytes
    /// reaperd handed the kernel long ago still drain to a slow reader while
    /// reaperd's own counters stand still, and that is not silence. After a
    /// half-close the silence counts from the FIN at the earliest.
    public struct Silence: Sendable, Equatable {
        public let idleFor: Duration
        public let afterHalfClose: Duration?

        public init(relayMovedAt: Instant, kernelMovedAt: Instant, halfClosedAt: Instant?, now: Instant) {
            let lastMoved = max(relayMovedAt, kernelMovedAt)
            idleFor = now.since(lastMoved)
            afterHalfClose = halfClosedAt.map { now.since(max($0, lastMoved)) }
        }
    }

    /// The kernel gave up on the client (`Errno.isPeerUnreachable`). With data
    /// in flight it was the user timeout (or retransmission limit); with nothing
    /// in flight, the keepalive probes. A client that closed normally never
    /// reaches here: FIN and RST are ordinary closes.
    public static func clientDeathReason(evidence: ReapEvidence) -> ReapReason {
        evidence.sawDataInFlight ? .userTimeout : .keepalive
    }

    /// When a socket next needs a TCP_INFO read. The kernel sends the first
    /// keepalive probe only after `keepalive_idle` without receiving anything, and
    /// a peer that answers resets that clock; until then the socket cannot be
    /// probing, and a kernel that gives up on it wakes epoll anyway. So a healthy
    /// idle socket is read about once per `keepalive_idle`, not once per sweep,
    /// while one with probes out or data in flight is read every sweep.
    public static func nextCheck(after info: TCPInfo, keepaliveIdleSeconds: Int?, now: Instant) -> Instant {
        if !info.isEstablished || info.probes > 0 || info.hasDataInFlight { return now }
        guard let idle = keepaliveIdleSeconds else { return now.adding(.seconds(60)) }
        let silent = Int64(min(info.lastAckReceivedMilliseconds, info.lastDataReceivedMilliseconds))
        let remaining = Int64(idle) * 1000 - silent
        return remaining <= 0 ? now : now.adding(.milliseconds(remaining))
    }
}
