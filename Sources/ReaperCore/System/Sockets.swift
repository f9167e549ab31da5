internal import CLinuxShim
internal import Glibc

/// Thin wrappers of the socket calls reaperd makes. Each takes the raw number of a
/// descriptor its caller owns and retries `EINTR` through `syscall`.
public enum Sockets {
    /// A non-blocking, close-on-exec socket. The corresponding C function is `socket`.
    public static func stream(family: Int32) throws(SystemError) -> FileDescriptor {
        let fd = try syscall("socket") {
            Glibc.socket(family, CLS_SOCK_STREAM | CLS_SOCK_NONBLOCK | CLS_SOCK_CLOEXEC, 0)
        }
        return FileDescriptor(owning: fd)
    }

    /// A non-blocking, close-on-exec datagram socket.
    public static func datagram(family: Int32) throws(SystemError) -> FileDescriptor {
        let fd = try syscall("socket") {
            Glibc.socket(family, CLS_SOCK_DGRAM | CLS_SOCK_NONBLOCK | CLS_SOCK_CLOEXEC, 0)
        }
        return FileDescriptor(owning: fd)
    }

    public static func bind(_ fd: Int32, _ address: SocketAddress) throws(SystemError) {
        _ = try syscall("bind") { address.withSockaddr { Glibc.bind(fd, $0, $1) } }
    }

    public static func listen(_ fd: Int32, backlog: Int) throws(SystemError) {
        _ = try syscall("listen") { Glibc.listen(fd, Int32(clamping: backlog)) }
    }

    /// accept4 with SOCK_NONBLOCK | SOCK_CLOEXEC; `.wouldBlock` when the queue is empty.
    public static func accept(_ fd: Int32) throws(SystemError) -> IOResult<FileDescriptor> {
        let result = try nonBlockingSyscall("accept4") {
            cls_accept4(fd, nil, nil, CLS_SOCK_NONBLOCK | CLS_SOCK_CLOEXEC)
        }
        guard case .processed(let raw) = result else { return .wouldBlock }
        return .processed(FileDescriptor(owning: raw))
    }

    /// An accepted connection with its peer's address, from the one accept4 call.
    public struct Accepted: ~Copyable {
        public var socket: FileDescriptor
        public var peer: SocketAddress
    }

    /// accept4 that also returns the peer address (no getpeername per client).
    public static func acceptWithPeer(_ fd: Int32) throws(SystemError) -> IOResult<Accepted> {
        var result: Int32 = -1
        var code: Int32 = 0
        var peer: SocketAddress
        repeat {
            (peer, result) = SocketAddress.capture { cls_accept4(fd, $0, $1, CLS_SOCK_NONBLOCK | CLS_SOCK_CLOEXEC) }
            code = result < 0 ? Glibc.errno : 0
        } while result < 0 && code == EINTR
        if result < 0 {
            if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
            precondition(code != EBADF && code != EFAULT, "accept4: reaperd bug")
            throw SystemError("accept4", Errno(code))
        }
        return .processed(Accepted(socket: FileDescriptor(owning: result), peer: peer))
    }

    /// Starts a connect; `.wouldBlock` means EINPROGRESS: wait for writability,
    /// then read `SO_ERROR`.
    public static func connect(_ fd: Int32, _ address: SocketAddress) throws(SystemError) -> IOResult<Void> {
        while true {
            let result = address.withSockaddr { Glibc.connect(fd, $0, $1) }
            if result == 0 { return .processed(()) }
            let code = Glibc.errno
            if code == EINTR { continue }
            if code == EINPROGRESS || code == EAGAIN { return .wouldBlock }
            precondition(code != EBADF && code != EFAULT, "connect: reaperd bug")
            throw SystemError("connect", Errno(code))
        }
    }

    public static func setOption(_ fd: Int32, level: Int32, name: Int32, value: Int32) throws(SystemError) {
        var value = value
        _ = try syscall("setsockopt") {
            Glibc.setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    public static func option(_ fd: Int32, level: Int32, name: Int32) throws(SystemError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = try syscall("getsockopt") { Glibc.getsockopt(fd, level, name, &value, &length) }
        return value
    }

    /// The pending error of a socket (`SO_ERROR`), which reading also clears; nil when none.
    public static func pendingError(_ fd: Int32) -> Errno? {
        guard let code = try? option(fd, level: SOL_SOCKET, name: SO_ERROR), code != 0 else { return nil }
        return Errno(code)
    }

    public static func localAddress(_ fd: Int32) throws(SystemError) -> SocketAddress {
        let (address, result) = SocketAddress.capture { Glibc.getsockname(fd, $0, $1) }
        if result != 0 { throw SystemError("getsockname", Errno(Glibc.errno)) }
        return address
    }

    public static func peerAddress(_ fd: Int32) throws(SystemError) -> SocketAddress {
        let (address, result) = SocketAddress.capture { Glibc.getpeername(fd, $0, $1) }
        if result != 0 { throw SystemError("getpeername", Errno(Glibc.errno)) }
        return address
    }

    /// Sends our FIN: the peer reads end-of-file, the other direction stays open.
    public static func shutdownWrite(_ fd: Int32) throws(SystemError) {
        _ = try syscall("shutdown") { Glibc.shutdown(fd, Int32(SHUT_WR)) }
    }

    /// Sets `SO_LINGER` to zero so close sends RST instead of FIN: a reaped peer is
    /// gone and must not hold a FIN_WAIT/TIME_WAIT entry or a retransmit queue.
    public static func abortOnClose(_ fd: Int32) {
        var value = linger(l_onoff: 1, l_linger: 0)
        _ = Glibc.setsockopt(fd, SOL_SOCKET, SO_LINGER, &value, socklen_t(MemoryLayout<linger>.size))
    }

    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<
        Int
    > {
        try nonBlockingSyscall("read") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// recv(2) with MSG_PEEK: copies what is queued and leaves it queued, so a
    /// reader can look before deciding how much is its own. 0 is end-of-file.
    public static func peek(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> IOResult<
        Int
    > {
        try nonBlockingSyscall("recv(MSG_PEEK)") { Glibc.recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_PEEK)) }
    }

    /// send(2) with MSG_NOSIGNAL: a peer that went away is an error, not SIGPIPE.
    public static func write(_ fd: Int32, from buffer: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        try nonBlockingSyscall("send") { Glibc.send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Non-blocking send on a connected datagram or stream socket.
    public static func send(_ fd: Int32, _ bytes: [UInt8]) throws(SystemError) -> IOResult<Int> {
        try nonBlockingSyscall("send") {
            bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
    }
}

extension Sockets {
    /// Makes a socket blocking with send/receive deadlines: for the command-line
    /// client, where a per-call deadline is the right guard.
    public static func makeBlocking(_ fd: Int32, timeoutSeconds: Int) throws(SystemError) {
        let flags = try syscall("fcntl") { fcntl(fd, F_GETFL) }
        _ = try syscall("fcntl") { fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        let size = socklen_t(MemoryLayout<timeval>.size)
        _ = try syscall("setsockopt") { Glibc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, size) }
        _ = try syscall("setsockopt") { Glibc.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, size) }
    }

    /// Blocking read; 0 at end-of-file.
    public static func readBlocking(_ fd: Int32, into buffer: inout [UInt8]) throws(SystemError) -> Int {
        try syscall("read") { buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }
    }

    /// Blocking send of all bytes.
    public static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let sent = try syscall("send") {
                bytes.withUnsafeBytes {
                    Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
                }
            }
            offset += sent
        }
    }
}

extension Sockets {
    /// Sends one datagram carrying `descriptors` (SCM_RIGHTS) without blocking.
    /// The corresponding C function is `sendmsg`, with MSG_DONTWAIT | MSG_NOSIGNAL.
    public static func sendNonBlocking(_ fd: Int32, _ bytes: [UInt8], descriptors: [Int32]) throws(SystemError)
        -> IOResult<Int>
    {
        try nonBlockingSyscall("sendmsg") {
            bytes.withUnsafeBytes { raw in
                descriptors.withUnsafeBufferPointer { fds in
                    cls_send_with_fds(
                        fd, raw.baseAddress, raw.count, fds.baseAddress, Int32(fds.count),
                        Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
                }
            }
        }
    }

    /// Both directions finished: the peer gets FIN now even while another process
    /// (systemd's descriptor store) still holds a copy of the socket.
    public static func shutdownBoth(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }
}

extension Sockets {
    /// Waits up to `timeoutMilliseconds` for `fd` to become writable; true when
    /// it did. For the few places that must block, boundedly, outside the event
    /// loop (the last notify messages at exit). The corresponding C function is
    /// `poll`; EINTR counts as time spent, so a signal cannot stretch the wait.
    public static func waitWritable(_ fd: Int32, timeoutMilliseconds: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        return poll(&entry, 1, timeoutMilliseconds) > 0 && entry.revents & Int16(POLLOUT) != 0
    }
}
