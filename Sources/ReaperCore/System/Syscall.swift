internal import Glibc

/// The outcome of a non-blocking operation: would-block is a value, not an error,
/// so the relay's hot path never throws for the common case (NIO's `IOResult`).
public enum IOResult<Value: ~Copyable>: ~Copyable {
    case processed(Value)
    case wouldBlock
}

extension IOResult: Copyable where Value: Copyable {}

/// Runs one system call, retrying `EINTR`, and turns failure into a typed error.
///
/// `EBADF` and `EFAULT` mean reaperd handed the kernel a descriptor or pointer it
/// does not own: a bug, never a condition of the world, so they stop the process.
@inline(__always)
func syscall<Result: FixedWidthInteger>(
    _ name: StaticString, _ body: () -> Result
) throws(SystemError) -> Result {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        precondition(code != EBADF && code != EFAULT, "\(name) returned \(Errno(code)): reaperd bug")
        throw SystemError(name.description, Errno(code))
    }
}

/// Like `syscall`, with `EAGAIN` reported as `.wouldBlock`.
@inline(__always)
func nonBlockingSyscall<Result: FixedWidthInteger>(
    _ name: StaticString, _ body: () -> Result
) throws(SystemError) -> IOResult<Result> {
    while true {
        let result = body()
        if result != -1 { return .processed(result) }
        let code = Glibc.errno
        if code == EINTR { continue }
        if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
        precondition(code != EBADF && code != EFAULT, "\(name) returned \(Errno(code)): reaperd bug")
        throw SystemError(name.description, Errno(code))
    }
}
