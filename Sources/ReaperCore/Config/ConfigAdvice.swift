/// Settings that parse and work but that an operator should hear about:
/// printed by `--check-config` and logged at start and on reload, never refused.
extension Configuration {
    /// Below this, `user_timeout = auto` ends living connections on lossy
    /// paths: measured with keepalive 1 s / 1 s / 2 (auto = 3 s) and 30 %
    /// random loss, 8 of 10 living streams were reaped; with the defaults (90 s)
    /// and 15 % loss, none. LXD raised its own floor from 30 s to 2 min after
    /// slow transfers died; 30 s is the least reaperd stays quiet about.
    public static let userTimeoutFloorMilliseconds: UInt32 = 30_000

    /// One sentence per concern, `FILE:LINE: warning: ...` when read from a file.
    public func advice() -> [String] {
        var notes: [String] = []
        let file: String? = if case .file(let path) = source { path } else { nil }
        func note(_ line: Int, _ text: String) {
            notes.append((file.map { "\($0):\(line): " } ?? "") + "warning: " + text)
        }
        func check(_ settings: ConnectionSettings, _ what: String, line: Int) {
            guard settings.userTimeout == .auto else { return }
            let computed = settings.userTimeoutMilliseconds
            guard computed > 0, computed < Self.userTimeoutFloorMilliseconds else { return }
            note(
                line,
                "\(what): user_timeout = auto comes to \(ConfigDuration.text(milliseconds: Int64(computed))) "
                    + "(keepalive_idle + keepalive_interval x keepalive_count); a living connection whose data "
                    + "waits that long for an acknowledgement (a lossy or congested path) is reaped; set "
                    + "user_timeout = 30s or more, or 0 to leave it to the kernel")
        }
        for listener in listeners { check(listener.connection, "listener \(listener.name)", line: listener.line) }
        for service in services { check(service.connection, "service \(service.name)", line: service.line) }
        return notes
    }
}
