internal import CLinuxShim
internal import Glibc

/// Anonymous memory behind a descriptor (memfd_create(2)): it lives as long
/// as any process holds the descriptor, so one handed to systemd's store
/// outlives reaperd and comes back to the next process with its contents.
enum MemoryFile {
    static func create(name: String) throws(SystemError) -> FileDescriptor {
        FileDescriptor(owning: try syscall("memfd_create") { cls_memfd_create(name) })
    }

    static func size(_ fd: Int32) throws(SystemError) -> Int {
        var status = stat()
        _ = try syscall("fstat") { fstat(fd, &status) }
        return Int(status.st_size)
    }

    static func resize(_ fd: Int32, to size: Int) throws(SystemError) {
        _ = try syscall("ftruncate") { ftruncate(fd, off_t(size)) }
    }

    static func write(_ fd: Int32, _ bytes: [UInt8], at offset: Int) throws(SystemError) {
        var done = 0
        while done < bytes.count {
            let written = try syscall("pwrite") {
                bytes.withUnsafeBytes { raw in
                    pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + done))
                }
            }
            done += written
        }
    }

    /// Up to `count` bytes at `offset`; fewer at the end of the file.
    static func read(_ fd: Int32, count: Int, at offset: Int) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = try syscall("pread") {
                bytes.withUnsafeMutableBytes { raw in
                    pread(fd, raw.baseAddress! + done, raw.count - done, off_t(offset + done))
                }
            }
            if got == 0 { break }
            done += got
        }
        return Array(bytes[0..<done])
    }
}
