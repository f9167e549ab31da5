/// The channel to systemd's file descriptor store (`FDSTORE=1`): sockets
/// handed to PID 1 come back through `sd_listen_fds_with_names` after a
/// restart or a crash. It only carries messages; `ConnectionStore` decides
/// what is stored, under which name, and counts what the store holds.
public protocol DescriptorStore: AnyObject {
    /// Hands duplicates of `descriptors` (one or two) to the store under
    /// `name`, in one message; false, with nothing sent, when one cannot be
    /// duplicated.
    func store(_ descriptors: [Int32], name: String) -> Bool
    /// Removes every descriptor stored under `name` (`FDSTOREREMOVE=1`), or
    /// withdraws the store of `name` still waiting to be sent.
    func remove(name: String)
    /// Lets the channel wait for its socket to become writable on `loop`.
    func attach(to loop: EventLoop)
    /// Every store and removal has gone out to PID 1.
    var isFlushed: Bool { get }
}

/// The store, spoken to over NOTIFY_SOCKET through the daemon's one
/// `NotifySender`: FDSTORE=1 and FDSTOREREMOVE=1 messages wait in the same
/// ordered, non-blocking queue as READY and STATUS (a burst of new connections
/// fills the socket's 10-datagram queue at once; libsystemd's
/// sd_pid_notify_with_fds would then block the loop). Each store waiting there
/// holds our own duplicates of its descriptors.
public final class SystemdDescriptorStore: DescriptorStore {
    private let sender: NotifySender

    public init(sender: NotifySender) {
        self.sender = sender
    }

    public func attach(to loop: EventLoop) { sender.attach(to: loop) }

    public var isFlushed: Bool { sender.pendingCount == 0 }

    public func store(_ descriptors: [Int32], name: String) -> Bool {
        precondition((1...2).contains(descriptors.count), "a store message carries one or two descriptors")
        guard let first = try? Files.duplicate(descriptors[0]) else { return false }
        guard descriptors.count == 2 else {
            sender.store(first, name: name)
            return true
        }
        guard let second = try? Files.duplicate(descriptors[1]) else {
            first.close()
            return false
        }
        sender.store(first, second, name: name)
        return true
    }

    public func remove(name: String) {
        // A store still waiting in the queue is simply withdrawn: PID 1 never saw it.
        guard sender.withdrawStores(named: name) == 0 else { return }
        sender.send("FDSTOREREMOVE=1\nFDNAME=\(name)")
    }

    /// The store's size when reaperd should use it: `fd_store = yes` under
    /// systemd, or `auto` when the service has one (`$FDSTORE` > 0: set by
    /// systemd 254+, and by the shipped unit for 252, which does not announce it).
    public static func capacity(for mode: FDStoreMode) -> Int? {
        guard Files.environment("NOTIFY_SOCKET") != nil else { return nil }
        let announced = Files.environment("FDSTORE").flatMap { Int($0) } ?? 0
        switch mode {
        case .no: return nil
        case .yes: return announced > 0 ? announced : 8192
        case .auto: return announced > 0 ? announced : nil
        }
    }
}
