internal import Glibc

/// Plain lines on stderr, for people to read:
/// `2026-12-02T12:40:01.123+00:00 notice: connection reaped listener=pg reason=keepalive`.
/// Field names are lower-cased without the `REAPERD_` prefix.
///
/// Each line starts with the local time (RFC 3339, milliseconds, with the UTC
/// offset so lines from hosts in different zones sort and compare), except when
/// stderr is the journal: journald stamps every line itself, and a second time
/// in the text would only disagree with it.
public final class ConsoleSink: LogSink {
    private let descriptor: Int32
    private let timestamps: Bool

    /// `timestamps` nil: on unless stderr is connected to the journal.
    public init(descriptor: Int32 = 2, timestamps: Bool? = nil) {
        self.descriptor = descriptor
        self.timestamps = timestamps ?? !JournalSink.stderrIsJournal
    }

    public func write(_ record: LogRecord) {
        let line = Self.format(record)
        Files.writeAll(descriptor, Array((timestamps ? Self.timestamp(Self.now()) + " " + line : line).utf8))
    }

    public static func format(_ record: LogRecord) -> String {
        var line = "\(record.level.rawValue): \(record.message)"
        for field in record.fields {
            var name = Substring(field.name)
            if name.hasPrefix("REAPERD_") { name = name.dropFirst(8) }
            let value = field.value.contains(" ") || field.value.isEmpty ? "\"\(field.value)\"" : field.value
            line += " \(name.lowercased())=\(value)"
        }
        return line + "\n"
    }

    /// The wall clock (CLOCK_REALTIME): what an operator compares with other logs.
    static func now() -> timespec {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return now
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmm±HH:MM` in the local time zone (TZ, /etc/localtime).
    static func timestamp(_ time: timespec) -> String {
        var seconds = time.tv_sec
        var parts = tm()
        guard localtime_r(&seconds, &parts) != nil else { return "\(time.tv_sec)" }
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let millis = Int(time.tv_nsec / 1_000_000)
        let fraction = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        let offset = Int32(parts.tm_gmtoff / 60)
        let zone = "\(offset < 0 ? "-" : "+")\(two(abs(offset) / 60)):\(two(abs(offset) % 60))"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(fraction)\(zone)"
    }
}
