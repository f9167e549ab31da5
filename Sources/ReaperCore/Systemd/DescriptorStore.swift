internal import CSystemd

/// systemd's file descriptor store (`FDSTORE=1`): sockets handed to PID 1 that
/// come back through `sd_listen_fds_with_names` after a restart or a crash.
public protocol DescriptorStore: AnyObject {
    /// Hands a duplicate of `descriptor` to the store under `name`.
    func store(_ descriptor: Int32, name: String)
    /// Removes every descriptor stored under `name` (`FDSTOREREMOVE=1`).
    func remove(name: String)
}

/// The store through libsystemd.
public final class SystemdDescriptorStore: DescriptorStore {
    public init() {}

    public func store(_ descriptor: Int32, name: String) {
        var fd = descriptor
        _ = sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=\(name)", &fd, 1)
    }

    public func remove(name: String) {
        _ = sd_notify(0, "FDSTOREREMOVE=1\nFDNAME=\(name)")
    }

    /// Whether to use the store: `fd_store = yes` under systemd, or `auto` when
    /// the service has one (`$FDSTORE` > 0: set by systemd 254+, and by the
    /// shipped unit for 252, which does not announce it).
    public static func isEnabled(_ mode: FDStoreMode) -> Bool {
        guard Files.environment("NOTIFY_SOCKET") != nil else { return false }
        switch mode {
        case .no: return false
        case .yes: return true
        case .auto: return (Files.environment("FDSTORE").flatMap { Int($0) } ?? 0) > 0
        }
    }
}

/// Names of stored descriptors. `@` separates the parts because listener names
/// cannot contain it and systemd forbids `:` in descriptor names.
public enum StoredName {
    /// A listening socket: `l@LISTENER@ADDRESS` (address with `:` as `_`).
    case listener(String)
    /// The client side of connection ID: `c@ID@LISTENER`.
    case client(id: UInt64, listener: String)
    /// The upstream side of connection ID: `u@ID@LISTENER`.
    case upstream(id: UInt64, listener: String)

    public var text: String {
        switch self {
        case .listener(let name): "l@\(name)"
        case .client(let id, let listener): "c@\(id)@\(listener)"
        case .upstream(let id, let listener): "u@\(id)@\(listener)"
        }
    }

    public static func listener(_ name: String, address: String) -> String {
        "l@\(name)@" + String(address.map { $0 == ":" ? "_" : $0 })
    }

    /// nil for names that are not reaperd's (a socket unit's FileDescriptorName).
    public init?(parsing text: String) {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false).map(String.init)
        switch parts.first {
        case "l" where parts.count == 3 && !parts[1].isEmpty:
            self = .listener(parts[1])
        case "c" where parts.count == 3:
            guard let id = UInt64(parts[1]), !parts[2].isEmpty else { return nil }
            self = .client(id: id, listener: parts[2])
        case "u" where parts.count == 3:
            guard let id = UInt64(parts[1]), !parts[2].isEmpty else { return nil }
            self = .upstream(id: id, listener: parts[2])
        default:
            return nil
        }
    }
}
