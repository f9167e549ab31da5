internal import Glibc

/// Keepalive for connections that existed before the sock_ops program was
/// attached (reaperd started after the service, or the unit restarted into a
/// new cgroup while clients held on): each socket is duplicated out of its
/// owner with pidfd_getfd(2) (CAP_SYS_PTRACE), checked by cookie, given the
/// options, and the duplicate closed at once: one kept open would pin the
/// connection after its owner closed it. Options set on a duplicate are the
/// owner's: one socket, two descriptors.
enum Retrofit {
    struct Outcome {
        var covered = 0
        var failed: AdoptError?
    }

    /// `wanted`: inode → cookie of the sockets to cover.
    static func apply(cgroup path: String, wanted: [UInt32: UInt64], settings: ConnectionSettings) -> Outcome {
        var outcome = Outcome()
        guard !wanted.isEmpty else { return outcome }
        var left = wanted
        for pid in Cgroups.processes(path) where !left.isEmpty {
            let directory = "/proc/\(pid)/fd"
            guard let handle = opendir(directory) else { continue }
            defer { closedir(handle) }
            var pidfd: FileDescriptor?
            while let entry = readdir(handle), !left.isEmpty {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                guard let number = Int32(name), let inode = socketInode(directory + "/" + name),
                    let cookie = left[inode]
                else { continue }
                do {
                    if pidfd == nil { pidfd = try AdoptKernel.openPidfd(pid) }
                    guard let raw = pidfd?.raw else { continue }
                    let copy = try AdoptKernel.duplicate(number, of: raw)
                    // The number may have been reused since the dump: act only on the same socket.
                    if AdoptKernel.cookie(of: copy.raw) == cookie {
                        try? SocketOptions.applyKeepalive(copy.raw, settings)
                        outcome.covered += 1
                        left[inode] = nil
                    }
                    copy.close()
                } catch {
                    outcome.failed = error
                    return outcome
                }
            }
        }
        return outcome
    }

    /// N of a `socket:[N]` link.
    fileprivate static func socketInode(_ path: String) -> UInt32? {
        var buffer = [CChar](repeating: 0, count: 64)
        let length = readlink(path, &buffer, buffer.count - 1)
        guard length > 9 else { return nil }
        let text = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard text.hasPrefix("socket:["), text.hasSuffix("]") else { return nil }
        return UInt32(text.dropFirst(8).dropLast())
    }
}

extension Retrofit {
    /// The process holding socket `inode`, and its command, found among the
    /// cgroup's processes (for the journal; only for connections that look suspect).
    static func owner(of inode: UInt32, in cgroup: String) -> (pid: Int32, command: String)? {
        for pid in Cgroups.processes(cgroup) {
            let directory = "/proc/\(pid)/fd"
            guard let handle = opendir(directory) else { continue }
            defer { closedir(handle) }
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                guard Int32(name) != nil, socketInode(directory + "/" + name) == inode else { continue }
                let command = (try? Files.read("/proc/\(pid)/comm", limit: 64)).map {
                    String(decoding: $0, as: UTF8.self).trimmingCharacters(in: "\n")
                }
                return (pid, command ?? "?")
            }
        }
        return nil
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        String(reversed().drop { $0 == set }.reversed())
    }
}
