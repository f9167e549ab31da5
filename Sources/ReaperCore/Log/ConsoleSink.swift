/// Plain lines on stderr: `notice: connection reaped listener=pg reason=keepalive`.
/// Field names are lower-cased without the `REAPERD_` prefix for people to read.
public final class ConsoleSink: LogSink {
    private let descriptor: Int32

    public init(descriptor: Int32 = 2) { self.descriptor = descriptor }

    public func write(_ record: LogRecord) {
        Files.writeAll(descriptor, Array(Self.format(record).utf8))
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
}
