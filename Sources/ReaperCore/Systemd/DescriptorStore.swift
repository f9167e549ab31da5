internal import CSystemd

/// systemd's file descriptor store (`FDSTORE=1`): sockets handed to PID 1 that
/// come back through `sd_listen_fds_with_names` after a restart or a crash.
public protocol DescriptorStore: AnyObject {
    /// Hands a duplicate of `descriptor` to the store under `name`; false when
    /// the store is full.
    func store(_ descriptor: Int32, name: String) -> Bool
    /// Removes every descriptor stored under `name` (`FDSTOREREMOVE=1`).
    func remove(name: String)
    /// Counts descriptors received back from the store at start.
    func adopted(_ count: Int)
    /// Lets the store wait for its socket to become writable on `loop`.
    func attach(to loop: EventLoop)
    /// Every store and removal has gone out to PID 1.
    var isFlushed: Bool { get }
}

/// The store, spoken to over NOTIFY_SOCKET through the daemon's one
/// `NotifySender`: FDSTORE=1 and FDSTOREREMOVE=1 messages wait in the same
/// ordered, non-blocking queue as READY and STATUS (a burst of new connections
/// fills the socket's 10-datagram queue at once; libsystemd's
/// sd_pid_notify_with_fds would then block the loop). Each store waiting there
/// holds our own duplicate of its descriptor. systemd 252 compares each new
/// descriptor with every stored one, so storing costs PID 1 time linear in the
/// store's size: `capacity` bounds it.
public final class SystemdDescriptorStore: DescriptorStore {
    private let sender: NotifySender
    /// Descriptors the store may hold ($FDSTORE, which the unit sets to its
    /// FileDescriptorStoreMax=).
    public let capacity: Int
    public private(set) var count = 0

    public init(capacity: Int, sender: NotifySender) {
        self.sender = sender
        self.capacity = capacity
    }

    public func attach(to loop: EventLoop) { sender.attach(to: loop) }

    public var isFlushed: Bool { sender.pendingCount == 0 }

    public func store(_ descriptor: Int32, name: String) -> Bool {
        guard count < capacity, let copy = try? Files.duplicate(descriptor) else { return false }
        count += 1
        sender.store(copy, name: name)
        return true
    }

    public func remove(name: String) {
        // A store still waiting in the queue is simply withdrawn: PID 1 never saw it.
        let withdrawn = sender.withdrawStores(named: name)
        if withdrawn > 0 {
            count = max(0, count - withdrawn)
            return
        }
        count = max(0, count - 1)
        sender.send("FDSTOREREMOVE=1\nFDNAME=\(name)")
    }

    public func adopted(_ received: Int) { count += received }

    /// The store's size when reaperd should use it: `fd_store = yes` under
    /// systemd, or `auto` when the service has one (`$FDSTORE` > 0: set by
    /// systemd 254+, and by the shipped unit for 252, which does not announce it).
    public static func capacity(for mode: FDStoreMode) -> Int? {
        guard Files.environment("NOTIFY_SOCKET") != nil else { return nil }
        let announced = Files.environment("FDSTORE").flatMap { Int($0) } ?? 0
        switch mode {
        case .no: return nil
        case .yes: return announced > 0 ? announced : 16384
        case .auto: return announced > 0 ? announced : nil
        }
    }
}

/// The names a connection's two sockets are stored under.
public struct StoredNames: Sendable, Equatable {
    public let client: String
    /// nil in echo mode (one socket).
    public let upstream: String?
}

/// Names of stored descriptors. `@` separates the parts because listener names
/// cannot contain it and systemd forbids `:` in descriptor names.
public enum StoredName: Equatable {
    /// A listening socket: `l@LISTENER@ADDRESS` (address with `:` as `_`).
    case listener(String)
    /// The client side of connection ID: `c@ID@LISTENER@ACCEPTED`, ACCEPTED the
    /// accept time in CLOCK_MONOTONIC milliseconds (shared by every process
    /// until a reboot, when the store is gone anyway), so an age survives a
    /// restart. Names from before it was added have no ACCEPTED part.
    case client(id: UInt64, listener: String, acceptedAtMilliseconds: UInt64?)
    /// The upstream side of connection ID: `u@ID@LISTENER`.
    case upstream(id: UInt64, listener: String)

    public var text: String {
        switch self {
        case .listener(let name): "l@\(name)"
        case .client(let id, let listener, let accepted?): "c@\(id)@\(listener)@\(accepted)"
        case .client(let id, let listener, nil): "c@\(id)@\(listener)"
        case .upstream(let id, let listener): "u@\(id)@\(listener)"
        }
    }

    public static func listener(_ name: String, address: String) -> String {
        "l@\(name)@" + String(address.map { $0 == ":" ? "_" : $0 })
    }

    /// The names a connection is stored under now.
    static func names(for connection: Connection) -> StoredNames {
        let accepted = connection.startedAt.nanoseconds / 1_000_000
        let client = StoredName.client(
            id: connection.id, listener: connection.listener.name, acceptedAtMilliseconds: accepted)
        let upstream =
            connection.isEcho ? nil : StoredName.upstream(id: connection.id, listener: connection.listener.name)
        return StoredNames(client: client.text, upstream: upstream?.text)
    }

    /// A name only reaperd makes (`l@`, `c@`, `u@`: no listener or socket unit
    /// name can contain `@`), whether or not this version understands it.
    public static func isReaperds(_ text: String) -> Bool {
        text.hasPrefix("l@") || text.hasPrefix("c@") || text.hasPrefix("u@")
    }

    /// nil for names that are not reaperd's, or that this version cannot read
    /// (an id of UInt64.max would overflow the next id: never made, so refused).
    public init?(parsing text: String) {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false).map(String.init)
        func id(_ part: String) -> UInt64? { UInt64(part).flatMap { $0 < .max ? $0 : nil } }
        switch parts.first {
        case "l" where parts.count == 3 && !parts[1].isEmpty:
            self = .listener(parts[1])
        case "c" where parts.count == 3 || parts.count == 4:
            guard let id = id(parts[1]), !parts[2].isEmpty else { return nil }
            var accepted: UInt64?
            if parts.count == 4 {
                guard let value = UInt64(parts[3]) else { return nil }
                accepted = value
            }
            self = .client(id: id, listener: parts[2], acceptedAtMilliseconds: accepted)
        case "u" where parts.count == 3:
            guard let id = id(parts[1]), !parts[2].isEmpty else { return nil }
            self = .upstream(id: id, listener: parts[2])
        default:
            return nil
        }
    }
}
