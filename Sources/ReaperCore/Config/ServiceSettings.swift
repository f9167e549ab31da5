/// One `[service:NAME]` section, fully resolved: adopt mode, where reaperd
/// watches an unmodified local service's own connections (SPEC §9).
///
/// Equality and hashing ignore `line`, as for listeners.
public struct ServiceSettings: Hashable, Sendable {
    /// Which processes' connections: the cgroup of a systemd unit, or a cgroup path.
    public enum Target: Hashable, Sendable, CustomStringConvertible {
        /// `unit = NAME.service`: its cgroup, found in the cgroup tree by name, and
        /// followed when the unit restarts (a new cgroup each time).
        case unit(String)
        /// `cgroup = /PATH`, relative to the cgroup v2 mount.
        case cgroup(String)

        public var description: String {
            switch self {
            case .unit(let name): "unit \(name)"
            case .cgroup(let path): "cgroup \(path)"
            }
        }
    }

    public var name: String
    public var line: Int
    public var target: Target
    /// Local ports to cover (inbound connections to them); empty covers every
    /// TCP connection of the cgroup, outbound ones included.
    public var ports: [UInt16]
    /// `[defaults]` with this section's overrides; only `ConnectionKey.adoptable` apply.
    public var connection: ConnectionSettings

    /// Most ports one service may list: each is one compare in the BPF program.
    public static let maxPorts = 64

    public init(
        name: String, line: Int = 0, target: Target, ports: [UInt16] = [], connection: ConnectionSettings = .defaults
    ) {
        self.name = name
        self.line = line
        self.target = target
        self.ports = ports
        self.connection = connection
    }

    /// A unit name as systemd spells one: NAME.service or NAME.scope, no path.
    public static func isValidUnit(_ name: String) -> Bool {
        (name.hasSuffix(".service") || name.hasSuffix(".scope")) && !name.contains("/") && name.utf8.count <= 255
            && name.utf8.allSatisfy { $0 > 32 && $0 < 127 }
    }

    public static func == (lhs: ServiceSettings, rhs: ServiceSettings) -> Bool {
        lhs.name == rhs.name && lhs.target == rhs.target && lhs.ports == rhs.ports && lhs.connection == rhs.connection
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(target)
        hasher.combine(ports)
        hasher.combine(connection)
    }
}
