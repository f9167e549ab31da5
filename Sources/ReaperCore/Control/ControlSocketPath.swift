/// Where the control socket lives when the configuration does not say (the
/// embedded default), where reaperctl looks for it, and whether reaperctl may
/// trust what it finds there (SPEC §4: never a path another user could create
/// first).
public enum ControlSocketPath {
    public static let standard = "/run/reaperd/control.sock"
    static let standardDirectory = "/run/reaperd"

    /// Why a path was refused, in the operator's words.
    public struct Refusal: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// The parts of the process environment the fallbacks depend on.
    public struct Environment: Sendable {
        /// `$XDG_RUNTIME_DIR`; nil when unset or empty.
        public var runtimeDirectory: String?
        /// `$TMPDIR` when it is an absolute path, else `/tmp`.
        public var temporaryDirectory: String
        public var uid: UInt32

        public init(runtimeDirectory: String?, temporaryDirectory: String, uid: UInt32) {
            self.runtimeDirectory = runtimeDirectory
            self.temporaryDirectory = temporaryDirectory
            self.uid = uid
        }

        /// From variables as `getenv` returns them.
        public init(variables: (String) -> String?, uid: UInt32) {
            let runtime = variables("XDG_RUNTIME_DIR")
            runtimeDirectory = (runtime?.isEmpty ?? true) ? nil : runtime
            let temporary = variables("TMPDIR") ?? ""
            var base = temporary.hasPrefix("/") ? temporary : "/tmp"
            while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
            temporaryDirectory = base
            self.uid = uid
        }

        public static var current: Environment {
            Environment(variables: Files.environment, uid: Files.effectiveUserID)
        }

        /// `$XDG_RUNTIME_DIR/reaperd.sock`.
        public var runtimeSocket: String? { runtimeDirectory.map { $0 + "/reaperd.sock" } }
        /// `TMP/reaperd-UID`: made by this user, mode 0700, so nobody else can
        /// put a socket in it or swap the one there.
        public var privateDirectory: String { "\(temporaryDirectory)/reaperd-\(uid)" }
        public var privateSocket: String { privateDirectory + "/control.sock" }
    }

    /// Every place a daemon of this user may have put its socket, in the order
    /// the daemon prefers them: the standard path, `$XDG_RUNTIME_DIR/reaperd.sock`,
    /// the private directory under `$TMPDIR` or `/tmp`.
    public static func candidates(_ environment: Environment = .current) -> [String] {
        [standard] + (environment.runtimeSocket.map { [$0] } ?? []) + [environment.privateSocket]
    }

    /// For the embedded default: the standard path when its directory exists or
    /// can be made and is writable; else `$XDG_RUNTIME_DIR` when it is this
    /// user's directory; else the private directory under /tmp, made (or found)
    /// mode 0700 and owned by this user. Refuses when that directory is not
    /// ours: someone made it first to catch our socket or impersonate it.
    public static func forEmbeddedDefault(_ environment: Environment = .current) throws(Refusal) -> String {
        if Files.isWritableDirectory(standardDirectory)
            || (Files.makeDirectory(standardDirectory, mode: 0o750) && Files.isWritableDirectory(standardDirectory))
        {
            return standard
        }
        if let runtime = environment.runtimeDirectory, let socket = environment.runtimeSocket,
            Files.isWritableDirectory(runtime),
            Files.status(runtime, followingSymlinks: true)?.owner == environment.uid
        {
            return socket
        }
        try preparePrivateDirectory(environment.privateDirectory, uid: environment.uid)
        return environment.privateSocket
    }

    /// Makes `directory` mode 0700 when it is missing; then insists that it is a
    /// real directory (lstat: not a symlink to one), owned by `uid`, mode 0700.
    public static func preparePrivateDirectory(_ directory: String, uid: UInt32) throws(Refusal) {
        do {
            try Files.createDirectory(directory, mode: 0o700)
            // The umask may have taken bits; the directory is ours, nobody else can race this.
            try? Files.chmod(directory, 0o700)
        } catch {
            if error.errno != .exists {
                throw Refusal(description: "control socket directory \(directory): cannot create it: \(error.errno)")
            }
        }
        let advice = "another user may have made it first; remove it, or set control_socket in a configuration file"
        guard let status = Files.status(directory, followingSymlinks: false) else {
            throw Refusal(description: "control socket directory \(directory): vanished while being checked")
        }
        guard status.kind == .directory else {
            let what = status.kind == .symbolicLink ? "a symlink" : "not a directory"
            throw Refusal(description: "control socket directory \(directory) is \(what): \(advice)")
        }
        guard status.owner == uid else {
            throw Refusal(
                description:
                    "control socket directory \(directory) is owned by uid \(status.owner), not \(uid): \(advice)")
        }
        guard status.permissions == 0o700 else {
            throw Refusal(
                description:
                    "control socket directory \(directory) has mode \(octal(status.permissions)), not 0700: \(advice)"
            )
        }
    }

    /// Whether reaperctl may talk to the socket at `path`: a socket, not a
    /// symlink, and both it and its directory owned by root or `uid`. Otherwise
    /// another user could have put it there, to read our requests or answer
    /// them falsely. One exception keeps the standard setup working: a directory
    /// root made for a service user (systemd's RuntimeDirectory=, /run/reaperd
    /// owned by the DynamicUser) in a parent only root can write, itself not
    /// writable by group or others, holding a socket of that user or root.
    /// A path that does not exist passes: connecting reports it.
    public static func checkTrusted(_ path: String, uid: UInt32 = Files.effectiveUserID) throws(Refusal) {
        guard let socket = Files.status(path, followingSymlinks: false) else { return }
        guard socket.kind == .socket else {
            let what = socket.kind == .symbolicLink ? "a symlink" : "not a socket"
            throw Refusal(description: "refusing to talk to \(path): it is \(what)")
        }
        guard let directoryPath = Files.canonicalPath(parent(of: path)),
            let directory = Files.status(directoryPath, followingSymlinks: false)
        else { return }
        let trusted: Set<UInt32> = [0, uid]
        if trusted.contains(socket.owner) && trusted.contains(directory.owner) { return }
        if let grandparent = Files.status(parent(of: directoryPath), followingSymlinks: true),
            grandparent.owner == 0, !grandparent.isWritableByOthers, !directory.isWritableByOthers,
            socket.owner == 0 || socket.owner == directory.owner
        {
            return
        }
        let culprit =
            trusted.contains(socket.owner)
            ? "its directory \(directoryPath) is owned by uid \(directory.owner)"
            : "it is owned by uid \(socket.owner)"
        throw Refusal(
            description:
                "refusing to talk to \(path): \(culprit), not root or uid \(uid); another user could have put it there")
    }

    /// Makes the socket's directory if it is missing (outside systemd, where no
    /// RuntimeDirectory= made it).
    public static func prepareDirectory(for path: String) {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let directory = String(path[..<slash])
        if !Files.exists(directory) { _ = Files.makeDirectory(directory, mode: 0o750) }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private static func octal(_ mode: UInt32) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
