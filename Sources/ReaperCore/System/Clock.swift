internal import Glibc

/// CLOCK_MONOTONIC in nanoseconds: what every deadline and age in reaperd is
/// measured on, so a wall-clock jump never reaps or spares a connection.
public struct Instant: Comparable, Hashable, Sendable {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static func now() -> Instant {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Instant(nanoseconds: UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec))
    }

    public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public func adding(_ duration: Duration) -> Instant {
        Instant(nanoseconds: nanoseconds &+ duration.nanoseconds)
    }

    /// Time from `earlier` to self; zero if `earlier` is later.
    public func since(_ earlier: Instant) -> Duration {
        nanoseconds >= earlier.nanoseconds ? .nanoseconds(Int64(nanoseconds - earlier.nanoseconds)) : .zero
    }

    public var microseconds: UInt64 { nanoseconds / 1000 }
}

extension Duration {
    /// Whole nanoseconds, saturating; negative durations count as zero.
    ///
    /// Both components carry the sign (-1 ms is seconds 0, attoseconds -10^15),
    /// so the whole value is compared with zero before either is converted.
    public var nanoseconds: UInt64 {
        guard self > .zero else { return 0 }
        let (seconds, attoseconds) = components
        let (product, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max }
        let (sum, carry) = product.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        return carry ? .max : sum
    }

    public var milliseconds: Int64 { Int64(clamping: nanoseconds / 1_000_000) }

    public var secondsAsDouble: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
