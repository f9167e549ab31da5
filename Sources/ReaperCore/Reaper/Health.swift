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

/// Why reaperd closed a connection itself (SPEC §5). The raw value is the
/// `REAPERD_REASON` journal field and the metrics label.
public enum ReapReason: String, Sendable, CaseIterable {
    case keepalive
    case userTimeout = "user-timeout"
    case idleTimeout = "idle-timeout"
    case halfCloseTimeout = "half-close-timeout"
    case upstreamDead = "upstream-dead"
    case admin
}

/// How a connection ended.
public enum ConnectionEnd: Sendable, Equatable {
    /// A peer closed it (FIN both ways, or a reset): counted, not a reap.
    case closed
    /// reaperd closed it, for this reason.
    case reaped(ReapReason)
    /// The upstream could not be reached; the client was refused.
    case upstreamFailed(String)
    /// The daemon is stopping and the grace period ran out.
    case shutdown
}
