internal import CLinuxShim
internal import Glibc

/// splice(2) and pipe calls, for zero-copy relaying (what HAProxy and
/// systemd-socket-proxyd do): socket → pipe → socket without copying to user space.
public enum Pipes {
    /// The two ends of one pipe.
    public struct Ends: ~Copyable {
        public var reader: FileDescriptor
        public var writer: FileDescriptor
    }

    /// A non-blocking, close-on-exec pipe. The corresponding C function is `pipe2`.
    public static func make() throws(SystemError) -> Ends {
        var fds: [Int32] = [-1, -1]
        _ = try syscall("pipe2") { fds.withUnsafeMutableBufferPointer { cls_pipe_nonblocking($0.baseAddress!) } }
        return Ends(reader: FileDescriptor(owning: fds[0]), writer: FileDescriptor(owning: fds[1]))
    }

    /// Asks for a pipe buffer of `bytes`; returns what the kernel granted.
    public static func setCapacity(_ fd: Int32, bytes: Int) -> Int {
        let granted = cls_set_pipe_size(fd, Int32(clamping: bytes))
        if granted > 0 { return Int(granted) }
        return Int(max(cls_pipe_size(fd), 4096))
    }

    /// Moves up to `count` bytes; 0 from a socket is end-of-file.
    /// The corresponding C function is `splice`, with SPLICE_F_MOVE | SPLICE_F_NONBLOCK.
    public static func splice(from source: Int32, to destination: Int32, count: Int) throws(SystemError) -> IOResult<
        Int
    > {
        try nonBlockingSyscall("splice") {
            cls_splice_nonblocking(source, destination, count)
        }
    }
}
