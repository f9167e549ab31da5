/// At most one line per key and period, with the count of those held back: a
/// dead upstream or a flood past max_connections must not flood the journal,
/// and one listener's trouble must not hide another's (the key names both the
/// listener and the reason).
struct WarningLimiter {
    private var last: [String: (at: Instant, suppressed: Int)] = [:]

    /// The number suppressed since the last line when a line may go out now;
    /// nil when this one is suppressed.
    mutating func allow(_ key: String, now: Instant, every period: Duration) -> Int? {
        if let entry = last[key], now.since(entry.at) < period {
            last[key] = (entry.at, entry.suppressed + 1)
            return nil
        }
        let suppressed = last[key]?.suppressed ?? 0
        last[key] = (now, 0)
        return suppressed
    }
}
