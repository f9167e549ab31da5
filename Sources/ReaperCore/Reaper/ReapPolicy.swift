/// What one sweep knows about a connection: pure data, so the decision is a
/// pure function that unit tests can drive without sockets.
public struct SweepObservation: Sendable {
    public var client: TCPInfo?
    /// nil for a Unix upstream, or before the upstream is connected.
    public var upstream: TCPInfo?
    public var clientError: Errno?
    public var upstreamError: Errno?
    /// Bytes moved either way since the previous sweep.
    public var bytesMoved: Bool
    /// Time since bytes last moved either way.
    public var idleFor: Duration
    /// Time since the first FIN, when one side has closed.
    public var halfClosedFor: Duration?
    /// reaperd itself holds bytes it could not yet deliver to the client.
    public var bytesWaitingForClient: Bool

    public init(
        client: TCPInfo?, upstream: TCPInfo?, clientError: Errno? = nil, upstreamError: Errno? = nil,
        bytesMoved: Bool, idleFor: Duration, halfClosedFor: Duration? = nil, bytesWaitingForClient: Bool = false
    ) {
        self.client = client
        self.upstream = upstream
        self.clientError = clientError
        self.upstreamError = upstreamError
        self.bytesMoved = bytesMoved
        self.idleFor = idleFor
        self.halfClosedFor = halfClosedFor
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

/// Health classification and reap decisions (SPEC §5).
public enum ReapPolicy {
    public static func health(_ observation: SweepObservation) -> Health {
        if isDead(observation.client, observation.clientError)
            || isDead(observation.upstream, observation.upstreamError)
        {
            return .dead
        }
        if let client = observation.client, client.isEstablished, client.probes > 0 { return .probing }
        if let upstream = observation.upstream, upstream.isEstablished, upstream.probes > 0 { return .probing }
        return observation.bytesMoved ? .active : .idle
    }

    /// The reason to reap now, or nil to let the connection live.
    public static func decide(
        _ observation: SweepObservation, evidence: ReapEvidence, settings: ConnectionSettings
    ) -> ReapReason? {
        if peerGone(observation.clientError) {
            return clientDeathReason(observation.clientError, evidence: evidence)
        }
        if peerGone(observation.upstreamError) { return .upstreamDead }
        if isDead(observation.client, observation.clientError)
            || isDead(observation.upstream, observation.upstreamError)
        {
            // Closed by a reset or FIN: an ordinary close, which the caller handles.
            return nil
        }
        if settings.idleTimeout > .zero && !observation.bytesMoved && observation.idleFor >= settings.idleTimeout {
            return .idleTimeout
        }
        if settings.halfCloseTimeout > .zero, let halfClosed = observation.halfClosedFor,
            halfClosed >= settings.halfCloseTimeout
        {
            return .halfCloseTimeout
        }
        return nil
    }

    /// The kernel gave up on the client. With data in flight it was the user
    /// timeout (or retransmission limit); with nothing in flight, the keepalive
    /// probes. A client that closed normally never reaches here: FIN and RST are
    /// ordinary closes.
    public static func clientDeathReason(_ error: Errno?, evidence: ReapEvidence) -> ReapReason {
        evidence.sawDataInFlight ? .userTimeout : .keepalive
    }

    /// The kernel declared the peer unreachable: probes or retransmissions went
    /// unanswered, or the route is gone.
    public static func peerGone(_ error: Errno?) -> Bool {
        error == .timedOut || error == .hostUnreachable || error == .networkUnreachable
    }

    static func isDead(_ info: TCPInfo?, _ error: Errno?) -> Bool {
        peerGone(error) || (info?.isClosed ?? false)
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
