internal import Glibc

/// What stat(2) or lstat(2) says about a path: the kind, the owner and the
/// permission bits, which is what deciding whether to trust a path needs.
public struct FileStatus: Hashable, Sendable {
    public enum Kind: Sendable {
        case regular, directory, symbolicLink, socket, other
    }

    public let kind: Kind
    /// The owner's uid.
    public let owner: UInt32
    /// `st_mode & 0o7777`: permissions with the setuid, setgid and sticky bits.
    public let permissions: UInt32

    public init(kind: Kind, owner: UInt32, permissions: UInt32) {
        self.kind = kind
        self.owner = owner
        self.permissions = permissions
    }

    /// Writable by the group or by others: someone besides the owner (and root)
    /// may create or replace entries in it.
    public var isWritableByOthers: Bool { permissions & 0o022 != 0 }
}

extension Files {
    /// The status of `path`; with `followingSymlinks` false a symlink is reported
    /// as one (lstat). nil when the path does not exist or cannot be examined.
    /// The corresponding C functions are `stat` and `lstat`.
    public static func status(_ path: String, followingSymlinks: Bool) -> FileStatus? {
        var raw = stat()
        let result = followingSymlinks ? stat(path, &raw) : lstat(path, &raw)
        guard result == 0 else { return nil }
        let kind: FileStatus.Kind
        switch raw.st_mode & S_IFMT {
        case S_IFREG: kind = .regular
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symbolicLink
        case S_IFSOCK: kind = .socket
        default: kind = .other
        }
        return FileStatus(kind: kind, owner: UInt32(raw.st_uid), permissions: UInt32(raw.st_mode) & 0o7777)
    }

    /// mkdir(2); `EEXIST` is an error like any other, for the caller to examine.
    public static func createDirectory(_ path: String, mode: UInt32) throws(SystemError) {
        _ = try syscall("mkdir") { mkdir(path, mode_t(mode)) }
    }

    /// realpath(3): the absolute path with every symlink resolved; nil when it
    /// does not exist.
    public static func canonicalPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The uid files this process creates are owned by.
    public static var effectiveUserID: UInt32 { UInt32(geteuid()) }
}
