internal import CSystemd
internal import Glibc

/// Native journal records through `sd_journal_sendv` (Swift cannot call the
/// variadic `sd_journal_send`): MESSAGE, PRIORITY, SYSLOG_IDENTIFIER,
/// MESSAGE_ID for the event kinds, CODE_FILE/CODE_LINE, and the REAPERD_* fields,
/// so `journalctl -u reaperd REAPERD_REASON=keepalive` works.
public final class JournalSink: LogSink {
    private let identifier: String
    private let fallback: ConsoleSink

    public init(identifier: String = "reaperd") {
        self.identifier = identifier
        fallback = ConsoleSink()
    }

    public func write(_ record: LogRecord) {
        var fields = [
            "MESSAGE=\(record.message)",
            "PRIORITY=\(record.priority)",
            "SYSLOG_IDENTIFIER=\(identifier)",
            "CODE_FILE=\(record.file)",
            "CODE_LINE=\(record.line)",
        ]
        if let event = record.event { fields.append("MESSAGE_ID=\(event.messageID)") }
        for field in record.fields { fields.append("\(field.name)=\(field.value)") }
        if Self.send(fields) < 0 { fallback.write(record) }
    }

    /// All fields in one buffer, one iovec each pointing into it.
    private static func send(_ fields: [String]) -> Int32 {
        var bytes: [UInt8] = []
        var ranges: [Range<Int>] = []
        for field in fields {
            let start = bytes.count
            bytes.append(contentsOf: field.utf8)
            ranges.append(start..<bytes.count)
        }
        return bytes.withUnsafeMutableBytes { raw in
            var vectors = ranges.map { iovec(iov_base: raw.baseAddress! + $0.lowerBound, iov_len: $0.count) }
            return sd_journal_sendv(&vectors, Int32(vectors.count))
        }
    }

    /// True when stderr is connected to the journal (systemd sets JOURNAL_STREAM
    /// to the device and inode of that stream).
    public static var stderrIsJournal: Bool {
        guard let stream = Files.environment("JOURNAL_STREAM") else { return false }
        let parts = stream.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var status = stat()
        guard fstat(2, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }
}
