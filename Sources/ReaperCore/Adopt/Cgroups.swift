internal import Glibc

/// Where a service's processes are: the cgroup v2 tree, found from
/// /proc/self/mountinfo (a stock Debian 12 host mounts it at /sys/fs/cgroup, a
/// hybrid layout at /sys/fs/cgroup/unified: never assumed).
enum Cgroups {
    /// The cgroup2 mount point, or nil when there is none.
    static func mountPoint() -> String? {
        guard let bytes = try? Files.read("/proc/self/mountinfo", limit: 4 << 20) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count, fields[dash + 1] == "cgroup2",
                fields.count > 4
            else { continue }
            return String(fields[4]).replacingOctalEscapes
        }
        return nil
    }

    /// The cgroup's v2 id: its directory's inode number. nil when it does not exist.
    static func id(of path: String) -> UInt64? {
        var status = stat()
        guard stat(path, &status) == 0, (status.st_mode & S_IFMT) == S_IFDIR else { return nil }
        return UInt64(status.st_ino)
    }

    static func open(_ path: String) throws(SystemError) -> FileDescriptor {
        FileDescriptor(owning: try syscall("open(cgroup)") { Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) })
    }

    /// The directory of unit `name` below `root`: systemd names a unit's cgroup
    /// after the unit, inside its slice (system.slice, or one the unit names),
    /// so the tree is searched, breadth first and bounded, not guessed.
    static func find(unit name: String, below root: String) -> String? {
        var queue = [root]
        var visited = 0
        while !queue.isEmpty && visited < 4096 {
            let directory = queue.removeFirst()
            visited += 1
            guard let handle = opendir(directory) else { continue }
            defer { closedir(handle) }
            while let entry = readdir(handle) {
                guard entry.pointee.d_type == UInt8(DT_DIR) else { continue }
                let child = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if child == "." || child == ".." { continue }
                let path = directory + "/" + child
                if child == name { return path }
                // Units live in slices; a service's own subgroups hold no units.
                if child.hasSuffix(".slice") || directory == root { queue.append(path) }
            }
        }
        return nil
    }

    /// The processes in the cgroup (cgroup.procs).
    static func processes(_ path: String) -> [Int32] {
        guard let bytes = try? Files.read(path + "/cgroup.procs", limit: 16 << 20) else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { Int32($0) }
    }
}

extension String {
    /// mountinfo writes a space in a path as \040.
    fileprivate var replacingOctalEscapes: String {
        guard contains("\\") else { return self }
        var result = ""
        var iterator = unicodeScalars.makeIterator()
        while let scalar = iterator.next() {
            guard scalar == "\\" else {
                result.unicodeScalars.append(scalar)
                continue
            }
            var digits = ""
            for _ in 0..<3 { if let next = iterator.next() { digits.unicodeScalars.append(next) } }
            if let value = UInt8(digits, radix: 8) { result.unicodeScalars.append(Unicode.Scalar(value)) }
        }
        return result
    }
}
