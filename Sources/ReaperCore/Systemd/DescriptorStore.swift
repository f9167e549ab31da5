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
}

/// The store, spoken to directly over NOTIFY_SOCKET without ever blocking.
///
/// A Unix datagram socket queues only `net.unix.max_dgram_qlen` (10) messages,
/// so a burst of new connections fills it at once; libsystemd's
/// sd_pid_notify_with_fds then blocks, which would stall the event loop. Here
/// messages that do not fit wait in order in a queue (each holding a duplicate
/// of its descriptor) and go out when the socket is writable. systemd 252
/// compares each new descriptor with every stored one, so storing costs PID 1
/// time linear in the store's size: `capacity` bounds it.
public final class SystemdDescriptorStore: DescriptorStore, EventHandler {
    private final class Message {
        let name: String
        let text: [UInt8]
        /// Our own duplicate of the descriptor to store, closed once sent.
        let descriptor: FileDescriptor?
        /// Its number, for sendmsg; empty for a removal.
        let descriptors: [Int32]

        init(name: String, text: String, descriptor: consuming FileDescriptor?) {
            self.name = name
            self.text = Array(text.utf8)
            if let raw = descriptor?.raw { descriptors = [raw] } else { descriptors = [] }
            self.descriptor = descriptor
        }

        var isStore: Bool { !descriptors.isEmpty }
    }

    private let socket: FileDescriptor
    private var queue: [Message] = []
    private var queueStart = 0
    private var registration: Registration?
    private weak var loop: EventLoop?
    /// Descriptors the store may hold ($FDSTORE, which the unit sets to its
    /// FileDescriptorStoreMax=).
    public let capacity: Int
    public private(set) var count = 0

    public init?(capacity: Int) {
        guard let path = Files.environment("NOTIFY_SOCKET"), let address = SocketAddress(notifySocket: path),
            let socket = try? Sockets.datagram(family: address.family)
        else { return nil }
        guard case .processed = (try? Sockets.connect(socket.raw, address)) ?? .wouldBlock else { return nil }
        self.socket = socket
        self.capacity = capacity
    }

    public func attach(to loop: EventLoop) {
        self.loop = loop
        registration = try? loop.register(socket.raw, interest: [], handler: self)
    }

    public func store(_ descriptor: Int32, name: String) -> Bool {
        guard count < capacity, let copy = try? Files.duplicate(descriptor) else { return false }
        count += 1
        enqueue(Message(name: name, text: "FDSTORE=1\nFDNAME=\(name)", descriptor: copy))
        return true
    }

    public func remove(name: String) {
        // A store still waiting here is simply withdrawn: PID 1 never saw it.
        let waiting = queue[queueStart...].filter { $0.name == name && $0.isStore }
        if !waiting.isEmpty {
            queue.removeAll { $0.name == name && $0.isStore }
            queueStart = min(queueStart, queue.count)
            count = max(0, count - waiting.count)
            return
        }
        count = max(0, count - 1)
        enqueue(Message(name: name, text: "FDSTOREREMOVE=1\nFDNAME=\(name)", descriptor: nil))
    }

    public func adopted(_ received: Int) { count += received }

    public func handle(_ events: EpollEvents, on registration: Registration) { flush() }

    private func enqueue(_ message: Message) {
        queue.append(message)
        flush()
    }

    /// Sends what the socket takes, in order; waits for writability otherwise.
    private func flush() {
        while queueStart < queue.count {
            let message = queue[queueStart]
            let result =
                (try? Sockets.sendNonBlocking(socket.raw, message.text, descriptors: message.descriptors))
                ?? .processed(0)
            guard case .processed = result else { break }
            queueStart += 1
        }
        if queueStart == queue.count {
            queue.removeAll(keepingCapacity: queue.count < 1024)
            queueStart = 0
        } else if queueStart > 1024 {
            queue.removeFirst(queueStart)
            queueStart = 0
        }
        if let registration, let loop { loop.modify(registration, interest: queue.isEmpty ? [] : [.writable]) }
    }

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
