internal import Glibc

/// The few file-system calls reaperd makes: reading its configuration and
/// placing its control socket.
public enum Files {
    /// Reads a whole regular file. Refuses anything larger than `limit` bytes so a
    /// mistaken path (a device, a log) cannot exhaust memory.
    public static func read(_ path: String, limit: Int = 4 << 20) throws(SystemError) -> [UInt8] {
        let fd = FileDescriptor(owning: try syscall("open") { open(path, O_RDONLY | O_CLOEXEC) })
        var status = stat()
        _ = try syscall("fstat") { fstat(fd.raw, &status) }
        if (status.st_mode & S_IFMT) == S_IFDIR { throw SystemError("read", Errno(EISDIR)) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try syscall("read") {
                chunk.withUnsafeMutableBytes { Glibc.read(fd.raw, $0.baseAddress, $0.count) }
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > limit { throw SystemError("read", Errno(EFBIG)) }
        }
        return bytes
    }

    public static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }

    /// True when the path is a socket (and not a symlink to one).
    public static func isSocket(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFSOCK
    }

    public static func isWritableDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR && access(path, W_OK) == 0
    }

    public static func unlink(_ path: String) throws(SystemError) {
        _ = try syscall("unlink") { Glibc.unlink(path) }
    }

    public static func rename(_ from: String, _ to: String) throws(SystemError) {
        _ = try syscall("rename") { Glibc.rename(from, to) }
    }

    public static func chmod(_ path: String, _ mode: UInt32) throws(SystemError) {
        _ = try syscall("chmod") { Glibc.chmod(path, mode_t(mode)) }
    }

    public static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }

    public static var processID: Int32 { getpid() }

    /// Writes all of `bytes` to a blocking descriptor such as stderr, ignoring errors:
    /// a log line that cannot be written must not take the daemon down.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written > 0 {
                    offset += written
                } else if written < 0 && Glibc.errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}

extension Files {
    /// mkdir(2); true when it was made.
    public static func makeDirectory(_ path: String, mode: UInt32) -> Bool {
        mkdir(path, mode_t(mode)) == 0
    }
}

extension Files {
    /// dup(2) with close-on-exec: a second descriptor for the same open file.
    public static func duplicate(_ fd: Int32) throws(SystemError) -> FileDescriptor {
        FileDescriptor(owning: try syscall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 0) })
    }
}
