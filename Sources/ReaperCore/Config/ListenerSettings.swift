/// One `[listener:NAME]` section, fully resolved: its own keys plus everything it
/// inherits from `[defaults]`.
///
/// Equality and hashing ignore `line`: it only locates the section for messages, and a
/// reload that merely moves a section (a comment added above it) must not count as a change.
public struct ListenerSettings: Hashable, Sendable {
    /// The NAME of `[listener:NAME]`: `[A-Za-z0-9_-]+`, at most 64 characters. It also
    /// matches a socket-activated descriptor's `FileDescriptorName=`.
    public var name: String
    /// Line of the section header, for messages; 0 when not read from a file.
    public var line: Int
    /// Addresses to bind, in file order. Empty when systemd passes the socket instead.
    /// Never Unix paths; no address appears twice across listeners (except port 0).
    public var listen: [Endpoint]
    /// Relay to `upstream`, or echo.
    public var mode: ListenerMode
    /// Where a relay connects (an address or a host name with a TCP port other than
    /// 0, or a Unix path); nil for echo.
    public var upstream: Upstream?
    /// `[defaults]` with this section's overrides applied.
    public var connection: ConnectionSettings

    /// Longest accepted listener name.
    public static let maxNameLength = 64

    /// A listener; `line` 0 means it was not read from a file.
    public init(
        name: String,
        line: Int = 0,
        listen: [Endpoint] = [],
        mode: ListenerMode = .relay,
        upstream: Upstream? = nil,
        connection: ConnectionSettings = .defaults
    ) {
        self.name = name
        self.line = line
        self.listen = listen
        self.mode = mode
        self.upstream = upstream
        self.connection = connection
    }

    /// Whether `name` is a valid listener name: `[A-Za-z0-9_-]+`, at most 64 characters.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= maxNameLength
            && name.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"):
                    true
                default:
                    false
                }
            }
    }

    public static func == (lhs: ListenerSettings, rhs: ListenerSettings) -> Bool {
        lhs.name == rhs.name && lhs.listen == rhs.listen && lhs.mode == rhs.mode
            && lhs.upstream == rhs.upstream && lhs.connection == rhs.connection
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(listen)
        hasher.combine(mode)
        hasher.combine(upstream)
        hasher.combine(connection)
    }
}
