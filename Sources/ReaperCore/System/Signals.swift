internal import CLinuxShim
internal import Glibc

/// SIGTERM, SIGINT and SIGHUP delivered as readable events on a descriptor, so
/// they are ordinary event-loop events instead of async handlers.
public struct SignalDescriptor: ~Copyable {
    public let descriptor: FileDescriptor

    /// Blocks `signals` for the process and returns a signalfd that reports them.
    /// SIGPIPE is ignored: a peer that vanished is a send error, not a signal.
    public init(_ signals: [Int32]) throws(SystemError) {
        Glibc.signal(SIGPIPE, SIG_IGN)
        var mask = sigset_t()
        sigemptyset(&mask)
        for number in signals { sigaddset(&mask, number) }
        _ = try syscall("sigprocmask") { sigprocmask(SIG_BLOCK, &mask, nil) }
        descriptor = FileDescriptor(
            owning: try syscall("signalfd") { signalfd(-1, &mask, Int32(SFD_NONBLOCK | SFD_CLOEXEC)) })
    }

    /// The next pending signal number, or nil when none is pending.
    public func next() -> Int32? {
        var info = signalfd_siginfo()
        let size = MemoryLayout<signalfd_siginfo>.size
        let result = try? nonBlockingSyscall("read(signalfd)") { Glibc.read(descriptor.raw, &info, size) }
        guard case .processed(let count) = result, count == size else { return nil }
        return Int32(info.ssi_signo)
    }

    /// Unblocks the signals again, e.g. in a child about to exec.
    public static func unblockAll() {
        var mask = sigset_t()
        sigfillset(&mask)
        sigprocmask(SIG_UNBLOCK, &mask, nil)
    }
}
