internal import CLinuxShim
internal import Glibc

/// Readiness flags as epoll reports them.
public struct EpollEvents: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let readable = EpollEvents(rawValue: CLS_EPOLLIN)
    public static let writable = EpollEvents(rawValue: CLS_EPOLLOUT)
    /// The peer sent FIN; reported with interest in `readable`.
    public static let readHangup = EpollEvents(rawValue: CLS_EPOLLRDHUP)
    /// Always reported: a pending socket error (read it with SO_ERROR).
    public static let error = EpollEvents(rawValue: CLS_EPOLLERR)
    /// Always reported: both directions are finished, or the socket was reset.
    public static let hangup = EpollEvents(rawValue: CLS_EPOLLHUP)
    /// At registration only (never modified): of the epoll sets watching one
    /// listening socket, one is woken per incoming client, not all of them.
    public static let exclusive = EpollEvents(rawValue: CLS_EPOLLEXCLUSIVE)
}

/// One epoll instance. The corresponding C functions are `epoll_create1`,
/// `epoll_ctl` and `epoll_wait`.
public struct Epoll: ~Copyable {
    let descriptor: FileDescriptor
    private var buffer: UnsafeMutableBufferPointer<epoll_event>

    public init(capacity: Int = 512) throws(SystemError) {
        descriptor = FileDescriptor(owning: try syscall("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) })
        buffer = .allocate(capacity: capacity)
    }

    deinit { buffer.deallocate() }

    public func add(_ fd: Int32, _ interest: EpollEvents, token: UInt64) throws(SystemError) {
        try control(EPOLL_CTL_ADD, fd, interest, token)
    }

    public func modify(_ fd: Int32, _ interest: EpollEvents, token: UInt64) throws(SystemError) {
        try control(EPOLL_CTL_MOD, fd, interest, token)
    }

    public func remove(_ fd: Int32) {
        var event = epoll_event()
        _ = epoll_ctl(descriptor.raw, EPOLL_CTL_DEL, fd, &event)
    }

    private func control(_ op: Int32, _ fd: Int32, _ interest: EpollEvents, _ token: UInt64) throws(SystemError) {
        var event = epoll_event()
        event.events = interest.rawValue
        event.data.u64 = token
        _ = try syscall("epoll_ctl") { epoll_ctl(descriptor.raw, op, fd, &event) }
    }

    /// Waits up to `timeoutMilliseconds` (-1 forever) and calls `body` per event.
    public func wait(timeoutMilliseconds: Int32, _ body: (UInt64, EpollEvents) -> Void) throws(SystemError) {
        let count = try syscall("epoll_wait") {
            epoll_wait(descriptor.raw, buffer.baseAddress, Int32(buffer.count), timeoutMilliseconds)
        }
        for index in 0..<Int(count) {
            let event = buffer[index]
            body(event.data.u64, EpollEvents(rawValue: event.events))
        }
    }
}
