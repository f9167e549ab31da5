/// A connection's health as the last sweep saw it (SPEC §5).
public enum Health: String, Sendable, CaseIterable {
    /// Bytes moved during the last poll interval.
    case active
    /// No bytes, no keepalive probe outstanding.
    case idle
    /// Probes are unanswered so far: a suspected half-open peer.
    case probing
    /// The kernel has closed a side.
    case dead
}

/// Connections counted by health: four counters, no allocation, so it can run
/// after every sweep (STATUS=) as well as for `reaperctl` and the metrics page.
public struct HealthCounts: Sendable, Equatable {
    private var counts = (active: 0, idle: 0, probing: 0, dead: 0)

    public init() {}

    public subscript(health: Health) -> Int {
        get {
            switch health {
            case .active: counts.active
            case .idle: counts.idle
            case .probing: counts.probing
            case .dead: counts.dead
            }
        }
        set {
            switch health {
            case .active: counts.active = newValue
            case .idle: counts.idle = newValue
            case .probing: counts.probing = newValue
            case .dead: counts.dead = newValue
            }
        }
    }

    /// Adds another worker's counts.
    mutating func add(_ other: HealthCounts) {
        for health in Health.allCases { self[health] += other[health] }
    }

    public static func == (lhs: HealthCounts, rhs: HealthCounts) -> Bool {
        Health.allCases.allSatisfy { lhs[$0] == rhs[$0] }
    }
}

/// Why reaperd closed a connection itself (SPEC §5). The raw value is the
/// `REAPERD_REASON` journal field and the metrics label.
public enum ReapReason: String, Sendable, CaseIterable {
    case keepalive
    case userTimeout = "user-timeout"
    case idleTimeout = "idle-timeout"
    case halfCloseTimeout = "half-close-timeout"
    case upstreamDead = "upstream-dead"
    case admin
    /// After a crash, the kernel's byte counters showed bytes that died inside
    /// the old process: both sides reset, never relayed on with a hole.
    case crashLoss = "crash-loss"
}

/// How a connection ended.
public enum ConnectionEnd: Sendable, Equatable {
    /// A peer closed it (FIN both ways, or a reset): counted, not a reap.
    case closed
    /// reaperd closed it, for this reason.
    case reaped(ReapReason)
    /// The upstream could not be reached; the client was refused.
    case upstreamFailed(String)
    /// `accept_proxy_protocol`: the client's PROXY header was missing, late or
    /// malformed; the client was refused before any upstream was dialled.
    case badProxyHeader(String)
    /// The daemon is stopping and the grace period ran out.
    case shutdown
}
