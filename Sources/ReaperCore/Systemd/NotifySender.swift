/// The one way reaperd speaks to the service manager: every NOTIFY_SOCKET
/// message (READY, STATUS, WATCHDOG, RELOADING, STOPPING, ERRNO, FDSTORE,
/// FDSTOREREMOVE) goes through this queue, so they arrive in the order they
/// were sent, and none blocks the event loop.
///
/// A Unix datagram socket queues only `net.unix.max_dgram_qlen` (10) messages
/// at the receiver; libsystemd's sd_notify then blocks until PID 1 reads,
/// stalling every connection. Here a message that does not fit waits in the
/// queue and goes out when the socket is writable again (epoll reports that
/// for a connected datagram socket when the peer's queue has room). Two kinds
/// are coalesced so a stalled reader cannot make the queue grow without end:
/// a STATUS-only message is dropped once any later message carries STATUS=
/// (it would be overridden anyway), and a WATCHDOG=1 is not queued twice.
///
/// Before the loop exists and after it has stopped nothing waits for
/// writability: `flush(within:)` waits, boundedly, at exit.
public final class NotifySender: EventHandler {
    private final class Message {
        enum Kind: Equatable {
            case statusOnly
            case watchdog
            case store(name: String)
            case other
        }

        let text: [UInt8]
        let kind: Kind
        let carriesStatus: Bool
        /// Our own duplicates of the descriptors to store (a connection's two
        /// sockets travel in one message), closed once sent or withdrawn.
        let first: FileDescriptor?
        let second: FileDescriptor?
        /// Their numbers, for sendmsg; empty for every other message.
        let descriptors: [Int32]

        init(
            text: String, kind: Kind, first: consuming FileDescriptor? = nil, second: consuming FileDescriptor? = nil
        ) {
            self.text = Array(text.utf8)
            self.kind = kind
            let lines = text.split(separator: "\n")
            carriesStatus = lines.contains { $0.hasPrefix("STATUS=") }
            descriptors = [first?.raw, second?.raw].compactMap { $0 }
            self.first = first
            self.second = second
        }
    }

    private let socket: FileDescriptor
    /// Sent messages before `head` are dropped lazily, so a burst costs O(1) each.
    private var queue: [Message] = []
    private var head = 0
    /// How many waiting messages are WATCHDOG=1 and STATUS-only, so coalescing
    /// does not scan a long queue (a burst of stores) for each ping.
    private var watchdogsWaiting = 0
    private var statusesWaiting = 0
    /// Stores waiting, by name, so a removal scans the queue only when its
    /// store has not gone out yet (a connection that ended within a burst).
    private var storesWaiting: [String: Int] = [:]
    private var registration: Registration?
    private var interest: EpollEvents = []
    private weak var loop: EventLoop?

    /// Connected to `path` (`$NOTIFY_SOCKET`: a path or `@abstract`); nil when
    /// that is no Unix socket address or cannot be reached.
    public init?(notifySocket path: String) {
        guard let address = SocketAddress(notifySocket: path),
            let socket = try? Sockets.datagram(family: address.family),
            case .processed = (try? Sockets.connect(socket.raw, address)) ?? .wouldBlock
        else { return nil }
        self.socket = socket
    }

    /// The sender for `$NOTIFY_SOCKET`; nil when there is none.
    public static func fromEnvironment() -> NotifySender? {
        Files.environment("NOTIFY_SOCKET").flatMap { NotifySender(notifySocket: $0) }
    }

    /// Messages not yet sent.
    public var pendingCount: Int { queue.count - head }

    /// Lets the sender wait for writability on `loop`. Idempotent: the notifier
    /// and the descriptor store both attach it.
    public func attach(to loop: EventLoop) {
        guard registration == nil else { return }
        self.loop = loop
        registration = try? loop.register(socket.raw, interest: [], handler: self)
        updateInterest()
    }

    /// Sends newline-separated `KEY=value` assignments, after everything queued.
    public func send(_ assignments: String) {
        let kind: Message.Kind
        if assignments == "WATCHDOG=1" {
            kind = .watchdog
        } else if assignments.hasPrefix("STATUS=") && !assignments.contains("\n") {
            kind = .statusOnly
        } else {
            kind = .other
        }
        enqueue(Message(text: assignments, kind: kind))
    }

    /// Hands `first` and `second` (our own duplicates) to the store under
    /// `name`, in one message: PID 1 takes both or, when the message fails, neither.
    func store(_ first: consuming FileDescriptor, _ second: consuming FileDescriptor? = nil, name: String) {
        enqueue(
            Message(text: "FDSTORE=1\nFDNAME=\(name)", kind: .store(name: name), first: first, second: second))
    }

    /// Takes back stores of `name` still waiting here (PID 1 never saw them);
    /// returns how many.
    func withdrawStores(named name: String) -> Int {
        // The usual case on every connection close: its store went out long ago.
        guard storesWaiting[name] != nil else { return 0 }
        let before = pendingCount
        removeWaiting { $0.kind == .store(name: name) }
        return before - pendingCount
    }

    public func handle(_ events: EpollEvents, on registration: Registration) { flush() }

    /// Sends what is queued, waiting for writability at most `limit` in all:
    /// at exit, when no loop will flush the rest, so STOPPING=1 or ERRNO= gets
    /// out unless PID 1 reads nothing for that long.
    public func flush(within limit: Duration) {
        let deadline = Instant.now().adding(limit)
        while true {
            flush()
            guard pendingCount > 0 else { return }
            let left = deadline.since(Instant.now())
            guard left > .zero else { return }
            _ = Sockets.waitWritable(socket.raw, timeoutMilliseconds: Int32(clamping: max(1, left.milliseconds)))
        }
    }

    private func enqueue(_ message: Message) {
        if message.kind == .watchdog && watchdogsWaiting > 0 { return }
        if message.carriesStatus && statusesWaiting > 0 { removeWaiting { $0.kind == .statusOnly } }
        queue.append(message)
        count(message, +1)
        flush()
    }

    private func removeWaiting(where matches: (Message) -> Bool) {
        queue.removeFirst(head)
        head = 0
        queue.removeAll { message in
            guard matches(message) else { return false }
            count(message, -1)
            return true
        }
    }

    private func count(_ message: Message, _ change: Int) {
        switch message.kind {
        case .watchdog: watchdogsWaiting += change
        case .statusOnly: statusesWaiting += change
        case .store(let name):
            let waiting = (storesWaiting[name] ?? 0) + change
            storesWaiting[name] = waiting > 0 ? waiting : nil
        case .other: break
        }
    }

    /// Sends what the socket takes, in order. A message refused for any reason
    /// but a full queue (no service manager any more) is dropped, not retried.
    private func flush() {
        while head < queue.count {
            let message = queue[head]
            let result =
                (try? Sockets.sendNonBlocking(socket.raw, message.text, descriptors: message.descriptors))
                ?? .processed(0)
            guard case .processed = result else { break }
            count(message, -1)
            head += 1
        }
        if head == queue.count {
            queue.removeAll(keepingCapacity: queue.count < 1024)
            head = 0
        } else if head > 1024 {
            queue.removeFirst(head)
            head = 0
        }
        updateInterest()
    }

    private func updateInterest() {
        let wanted: EpollEvents = pendingCount == 0 ? [] : [.writable]
        // Most sends go out at once: no epoll_ctl unless the wait changes.
        guard wanted != interest, let registration, let loop else { return }
        loop.modify(registration, interest: wanted)
        interest = wanted
    }
}
