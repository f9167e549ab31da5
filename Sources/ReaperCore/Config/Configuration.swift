/// Where a configuration came from: a file, or the embedded default used when there is none.
public enum ConfigSource: Hashable, Sendable {
    case file(String)
    case embeddedDefault
}

/// A parsed and validated `reaperd.conf` (SPEC §3): daemon settings, the defaults every
/// listener inherits, and the listeners, each fully resolved.
public struct Configuration: Hashable, Sendable {
    public var source: ConfigSource
    public var daemon: DaemonSettings
    /// The `[defaults]` section as written, over the built-in defaults.
    public var defaults: ConnectionSettings
    /// In file order; a valid configuration has at least one listener or service.
    public var listeners: [ListenerSettings]
    /// Adopt mode's `[service:NAME]` sections, in file order.
    public var services: [ServiceSettings]

    /// A configuration built in code (tests, the embedded default); no validation is applied.
    public init(
        source: ConfigSource,
        daemon: DaemonSettings = .defaults,
        defaults: ConnectionSettings = .defaults,
        listeners: [ListenerSettings],
        services: [ServiceSettings] = []
    ) {
        self.source = source
        self.daemon = daemon
        self.defaults = defaults
        self.listeners = listeners
        self.services = services
    }

    /// What runs with no configuration file (SPEC §4): one echo listener, `echo`, on
    /// `127.0.0.1:7070`, keepalive 60 s / 10 s / 3, everything else default. The control
    /// socket stays the default path; falling back to `$XDG_RUNTIME_DIR` or `/tmp` when
    /// `/run/reaperd` is not writable is the daemon's job at start-up.
    public static let embeddedDefault = Configuration(
        source: .embeddedDefault,
        listeners: [
            ListenerSettings(
                name: "echo",
                listen: [.ipv4(address: "127.0.0.1", port: 7070)],
                mode: .echo,
                connection: ConnectionSettings(keepaliveIdle: 60, keepaliveInterval: 10, keepaliveCount: 3)
            )
        ]
    )

    /// Parses and validates INI text. `file` names the file in diagnostics and in `source`.
    /// Every problem is collected before throwing, sorted by line.
    public static func parse(_ text: String, file: String) throws(ConfigError) -> Configuration {
        try parse(utf8: Array(text.utf8), file: file)
    }

    /// Parses raw file bytes. Prefer this when reading a file: invalid UTF-8 is then
    /// reported at its line instead of being silently replaced by the decoder.
    public static func parse(utf8 bytes: [UInt8], file: String) throws(ConfigError) -> Configuration {
        var diagnostics = ConfigDiagnostics(file: file)
        let lines = INILexer.lex(bytes, diagnostics: &diagnostics)
        let sections = ConfigSection.group(lines, diagnostics: &diagnostics)
        var builder = ConfigBuilder(diagnostics: diagnostics)
        let configuration = builder.build(sections, source: .file(file))
        guard builder.diagnostics.isEmpty else {
            throw ConfigError(diagnostics: builder.diagnostics.sorted)
        }
        return configuration
    }

    /// The listener called `name`, if any.
    public func listener(named name: String) -> ListenerSettings? {
        listeners.first { $0.name == name }
    }
}
