internal import Glibc

/// The few file-system calls reaperd makes: reading its configuration and
/// placing its control socket.
public enum Files {
    /// Why `read` returned no bytes.
    public enum ReadError: Error, CustomStringConvertible {
        case system(SystemError)
        /// A FIFO, device, socket or directory: reading it could block the
        /// caller (the event loop, on reload) or never end. The kind is in words.
        case notRegularFile(String)
        case tooLarge(limit: Int)

        public var description: String {
            switch self {
            case .system(let error): "\(error.errno)"
            case .notRegularFile(let kind): "not a regular file (\(kind))"
            case .tooLarge(let limit): "larger than \(limit) bytes"
            }
        }
    }

    /// Reads a whole regular file. Refuses anything else, and anything larger
    /// than `limit` bytes so a mistaken path (a log) cannot exhaust memory.
    ///
    /// Opened with O_NONBLOCK, so a FIFO at the path is refused instead of
    /// blocking in open(2) until a writer appears; fstat then decides, on the
    /// descriptor itself, so nothing can be swapped in between.
    public static func read(_ path: String, limit: Int = 4 << 20) throws(ReadError) -> [UInt8] {
        let raw: Int32
        do {
            raw = try syscall("open") { open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY) }
        } catch {
            throw .system(error)
        }
        let fd = FileDescriptor(owning: raw)
        var status = stat()
        do {
            _ = try syscall("fstat") { fstat(fd.raw, &status) }
        } catch {
            throw .system(error)
        }
        if let kind = nonRegularKind(status.st_mode) { throw .notRegularFile(kind) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count: Int
            do {
                count = try syscall("read") {
                    chunk.withUnsafeMutableBytes { Glibc.read(fd.raw, $0.baseAddress, $0.count) }
                }
            } catch {
                throw .system(error)
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
            if bytes.count > limit { throw .tooLarge(limit: limit) }
        }
        return bytes
    }

    /// nil for a regular file, else what it is.
    private static func nonRegularKind(_ mode: mode_t) -> String? {
        switch mode & S_IFMT {
        case S_IFREG: nil
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        default: "an unknown kind of file"
        }
    }

    public static func exists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }

    /// Which file a path names: device and inode, as lstat(2) reports them.
    public struct Identity: Hashable, Sendable {
        public let device: UInt64
        public let inode: UInt64
    }

    /// The file at `path` itself (a symlink is not followed); nil when there is none.
    public static func identity(_ path: String) -> Identity? {
        var status = stat()
        guard lstat(path, &status) == 0 else { return nil }
        return Identity(device: UInt64(status.st_dev), inode: UInt64(status.st_ino))
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
