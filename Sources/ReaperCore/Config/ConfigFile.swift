/// Reading the configuration from disk; parsing is `Configuration.parse`.
public enum ConfigFile {
    public static let defaultPath = "/etc/reaperd/reaperd.conf"

    /// Reads and parses `path`. A file that cannot be read is a diagnostic like
    /// any other, naming the file.
    public static func load(path: String) throws(ConfigError) -> Configuration {
        let bytes: [UInt8]
        do {
            bytes = try Files.read(path)
        } catch .notRegularFile(let kind) {
            throw ConfigError(diagnostics: [
                ConfigDiagnostic(file: path, line: nil, message: "not a regular file (\(kind))")
            ])
        } catch {
            throw ConfigError(diagnostics: [ConfigDiagnostic(file: path, line: nil, message: "cannot read: \(error)")])
        }
        return try Configuration.parse(utf8: bytes, file: path)
    }
}
