/// Reading the configuration from disk; parsing is `Configuration.parse`.
public enum ConfigFile {
    public static let defaultPath = "/etc/reaperd/reaperd.conf"

    /// Reads and parses `path`. A file that cannot be read is a diagnostic like
    /// any other, naming the file.
    public static func load(path: String) throws(ConfigError) -> Configuration {
        let bytes: [UInt8]
        do {
            bytes = try Files.read(path)
        } catch {
            throw ConfigError(diagnostics: [ConfigDiagnostic(file: path, line: nil, message: "cannot read: \(error.errno)")])
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            let line = firstInvalidLine(bytes)
            throw ConfigError(diagnostics: [ConfigDiagnostic(file: path, line: line, message: "not valid UTF-8")])
        }
        return try Configuration.parse(text, file: path)
    }

    private static func firstInvalidLine(_ bytes: [UInt8]) -> Int {
        var line = 1
        var start = 0
        for (index, byte) in bytes.enumerated() where byte == 0x0A {
            if String(validating: bytes[start..<index], as: UTF8.self) == nil { return line }
            line += 1
            start = index + 1
        }
        return line
    }
}
