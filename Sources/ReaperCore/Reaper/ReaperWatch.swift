/// What the reaper knows about one connection between sweeps: a value the
/// sweep alone writes (and a reload resets), kept beside the connection so a
/// sweep allocates nothing. The connection only reads `evidence`, when the
/// kernel reports its peer dead and the reason must be told.
struct ReaperWatch {
    /// Health as the last sweep saw it (SPEC §5).
    var health = Health.idle
    /// Unanswered keepalive probes on either socket at the last sweep.
    var probes: UInt8 = 0
    /// The client socket's smoothed round-trip time at its last read.
    var rttMicroseconds: UInt32 = 0
    var evidence = ReapEvidence()
    /// Bytes moved both ways at the last sweep: a change means `active`.
    var bytesAtLastSweep: UInt64 = 0
    /// Each socket's `tcpi_bytes_acked + tcpi_bytes_received` at its last read,
    /// and when a read last found either changed: bytes reaperd handed the
    /// kernel long ago still move while its own counters stand still (a slow
    /// reader draining a send queue of megabytes), and that is not silence.
    var clientKernelBytes: UInt64 = 0
    var upstreamKernelBytes: UInt64 = 0
    var kernelMovedAt = Instant(nanoseconds: 0)
    /// When the sweep next reads each socket's TCP_INFO (`ReapPolicy.nextCheck`).
    var nextClientCheck = Instant(nanoseconds: 0)
    var nextUpstreamCheck = Instant(nanoseconds: 0)
    /// When the sweep next looks at this connection (its place in `SweepQueue`).
    var sweepDue = Instant(nanoseconds: 0)
    /// It is queued for the very next sweep: bytes moved or wait, or it is new.
    /// The relay asks the daemon to bring it forward only while this is false,
    /// so a busy connection costs the hot path one test of a flag.
    var dueNextSweep = false

    /// Notes a socket's kernel byte counters; true when they moved since its
    /// last read.
    mutating func noteKernelBytes(_ info: TCPInfo, upstream: Bool, now: Instant) -> Bool {
        let total = info.bytesAcked &+ info.bytesReceived
        let previous = upstream ? upstreamKernelBytes : clientKernelBytes
        if upstream { upstreamKernelBytes = total } else { clientKernelBytes = total }
        guard total != previous else { return false }
        kernelMovedAt = now
        return true
    }

    /// New keepalive timing (a reload): read both sockets at the next sweep.
    mutating func recheckNow() {
        nextClientCheck = Instant(nanoseconds: 0)
        nextUpstreamCheck = Instant(nanoseconds: 0)
    }
}
