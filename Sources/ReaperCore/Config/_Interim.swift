// Interim copy of the configuration API until the Config layer lands. DELETE.
public enum Endpoint: Hashable, Sendable, CustomStringConvertible {
    case ipv4(address: String, port: UInt16)
    case ipv6(address: String, port: UInt16)
    case unix(path: String)
    public var description: String {
        switch self {
        case .ipv4(let a, let p): "\(a):\(p)"
        case .ipv6(let a, let p): "[\(a)]:\(p)"
        case .unix(let path): "unix:\(path)"
        }
    }
    public var isUnix: Bool { if case .unix = self { true } else { false } }
}
public enum LogLevel: String, CaseIterable, Sendable, Comparable {
    case debug, info, notice, warning, err
    public static func < (a: LogLevel, b: LogLevel) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
}
public enum LogTarget: String, Sendable { case auto, journal, console }
public enum ListenerMode: String, Sendable { case relay, echo }
public enum UserTimeout: Hashable, Sendable { case auto, off, after(Duration) }
public struct DaemonSettings: Hashable, Sendable {
    public var controlSocket: String = "/run/reaperd/control.sock"
    public var metrics: Endpoint? = nil
    public var logLevel: LogLevel = .info
    public var logTarget: LogTarget = .auto
    public var pollInterval: Duration = .seconds(1)
    public var shutdownGrace: Duration = .seconds(10)
    public var maxConnections: Int = 100000
}
public struct ConnectionSettings: Hashable, Sendable {
    public var keepalive = true
    public var keepaliveIdle = 60
    public var keepaliveInterval = 10
    public var keepaliveCount = 3
    public var userTimeout: UserTimeout = .auto
    public var idleTimeout: Duration = .zero
    public var halfCloseTimeout: Duration = .seconds(60)
    public var connectTimeout: Duration = .seconds(5)
    public var upstreamKeepalive = true
    public var maxConnections = 10000
    public var backlog = 4096
    public var reusePort = false
    public static let defaults = ConnectionSettings()
    public var userTimeoutMilliseconds: UInt32 { 0 }
}
public struct ListenerSettings: Hashable, Sendable {
    public var name: String
    public var line: Int
    public var listen: [Endpoint]
    public var mode: ListenerMode
    public var upstream: Endpoint?
    public var connection: ConnectionSettings
}
public enum ConfigSource: Hashable, Sendable { case file(String), embeddedDefault }
public struct Configuration: Hashable, Sendable {
    public var source: ConfigSource
    public var daemon: DaemonSettings
    public var defaults: ConnectionSettings
    public var listeners: [ListenerSettings]
    public static let embeddedDefault = Configuration(source: .embeddedDefault, daemon: DaemonSettings(), defaults: .defaults, listeners: [ListenerSettings(name: "echo", line: 0, listen: [.ipv4(address: "127.0.0.1", port: 7070)], mode: .echo, upstream: nil, connection: .defaults)])
    public static func parse(_ text: String, file: String) throws(ConfigError) -> Configuration { embeddedDefault }
    public func effectiveINI() -> String { "" }
}
public struct ConfigDiagnostic: Hashable, Sendable, CustomStringConvertible {
    public var file: String; public var line: Int?; public var message: String
    public var description: String { "\(file):\(line ?? 0): \(message)" }
}
public struct ConfigError: Error, Sendable { public var diagnostics: [ConfigDiagnostic] }
