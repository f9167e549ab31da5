internal import Glibc

/// An error number returned by the kernel, with the names reaperd cares about.
///
/// Modeled on swift-system's `Errno`: a value, not an enum, so unknown codes
/// stay representable.
public struct Errno: Error, Hashable, Sendable, CustomStringConvertible {
    public let code: Int32

    public init(_ code: Int32) { self.code = code }

    public static let interrupted = Errno(EINTR)
    public static let wouldBlock = Errno(EAGAIN)
    public static let inProgress = Errno(EINPROGRESS)
    public static let badDescriptor = Errno(EBADF)
    public static let badAddress = Errno(EFAULT)
    public static let invalid = Errno(EINVAL)
    public static let timedOut = Errno(ETIMEDOUT)
    public static let connectionRefused = Errno(ECONNREFUSED)
    public static let connectionReset = Errno(ECONNRESET)
    public static let brokenPipe = Errno(EPIPE)
    public static let hostUnreachable = Errno(EHOSTUNREACH)
    public static let networkUnreachable = Errno(ENETUNREACH)
    public static let tooManyOpenFiles = Errno(EMFILE)
    public static let fileTableFull = Errno(ENFILE)
    public static let noBuffers = Errno(ENOBUFS)
    public static let noMemory = Errno(ENOMEM)
    public static let addressInUse = Errno(EADDRINUSE)
    public static let noEntry = Errno(ENOENT)
    public static let exists = Errno(EEXIST)
    public static let accessDenied = Errno(EACCES)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let connectionAborted = Errno(ECONNABORTED)
    public static let notASocket = Errno(ENOTSOCK)
    public static let notPermitted = Errno(EPERM)

    /// The kernel's text for this error, e.g. "Connection timed out".
    public var description: String {
        guard let text = strerror(code) else { return "errno \(code)" }
        return String(cString: text)
    }

    /// The peer or path is gone: the side it happened on is finished
    /// (systemd's ERRNO_IS_DISCONNECT).
    public var isDisconnect: Bool {
        switch code {
        case ECONNABORTED, ECONNREFUSED, ECONNRESET, EHOSTDOWN, EHOSTUNREACH, ENETDOWN,
            ENETRESET, ENETUNREACH, ENONET, ENOPROTOOPT, ENOTCONN, EPIPE, EPROTO, ESHUTDOWN,
            ETIMEDOUT:
            return true
        default:
            return false
        }
    }

    /// The kernel gave up on the peer: keepalive probes or retransmissions went
    /// unanswered past their limit (`ETIMEDOUT`), or the route to it is gone.
    /// A subset of `isDisconnect`: these end a connection as a reap, the rest
    /// of the disconnects (a reset, a broken pipe) as an ordinary close.
    public var isPeerUnreachable: Bool {
        switch code {
        case ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ENETDOWN, ENONET: true
        default: false
        }
    }

    /// Try again later; nothing is wrong with the descriptor (ERRNO_IS_TRANSIENT).
    public var isTransient: Bool {
        code == EAGAIN || code == EINTR || code == ENOBUFS || code == ENOMEM
    }

    /// accept(2) failed for this one connection or for resources, not for the
    /// listener: keep the listener (ERRNO_IS_ACCEPT_AGAIN plus descriptor
    /// exhaustion). Memory pressure is not in it: the connection stays queued,
    /// so accepting again at once would spin (see `isMemoryPressure`).
    public var isAcceptAgain: Bool {
        isDisconnect || code == EAGAIN || code == EINTR || code == EMFILE || code == ENFILE || code == EPERM
    }

    /// Descriptor exhaustion: accepting again at once would spin.
    public var isDescriptorExhaustion: Bool { code == EMFILE || code == ENFILE }

    /// The kernel is short of memory or buffers: worth retrying, after a pause.
    public var isMemoryPressure: Bool { code == ENOMEM || code == ENOBUFS }
}

/// A failed system call: which call, and the errno it returned.
public struct SystemError: Error, Sendable, CustomStringConvertible {
    public let call: String
    public let errno: Errno

    public init(_ call: String, _ errno: Errno) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(errno)" }
}
