import Glibc
import Testing

@testable import ReaperCore

/// A fresh directory under /tmp, removed (with what is in it) by `remove()`.
private struct ScratchDirectory {
    let path: String

    init() {
        var template = Array("/tmp/reaperd-unit-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    func remove() {
        _ = system("rm -rf '\(path)'")
    }
}

@Suite struct ControlSocketPathTests {
    @Test func environmentDecidesTheFallbacks() {
        let plain = ControlSocketPath.Environment(variables: { _ in nil }, uid: 1000)
        #expect(plain.runtimeDirectory == nil)
        #expect(plain.temporaryDirectory == "/tmp")
        #expect(plain.privateSocket == "/tmp/reaperd-1000/control.sock")
        #expect(ControlSocketPath.candidates(plain) == [ControlSocketPath.standard, "/tmp/reaperd-1000/control.sock"])

        let variables = ["XDG_RUNTIME_DIR": "/run/user/1000", "TMPDIR": "/var/tmp/"]
        let session = ControlSocketPath.Environment(variables: { variables[$0] }, uid: 1000)
        #expect(
            ControlSocketPath.candidates(session) == [
                ControlSocketPath.standard, "/run/user/1000/reaperd.sock", "/var/tmp/reaperd-1000/control.sock",
            ])

        // An empty XDG_RUNTIME_DIR is unset; a relative TMPDIR is ignored.
        let odd = ["XDG_RUNTIME_DIR": "", "TMPDIR": "relative"]
        let ignored = ControlSocketPath.Environment(variables: { odd[$0] }, uid: 7)
        #expect(ignored.runtimeDirectory == nil)
        #expect(ignored.privateDirectory == "/tmp/reaperd-7")
    }

    @Test func privateDirectoryIsMadeMode0700AndThenAccepted() throws {
        let scratch = ScratchDirectory()
        defer { scratch.remove() }
        let uid = Files.effectiveUserID
        let environment = ControlSocketPath.Environment(
            runtimeDirectory: nil, temporaryDirectory: scratch.path, uid: uid)
        let previous = umask(0o077)
        defer { umask(previous) }
        try ControlSocketPath.preparePrivateDirectory(environment.privateDirectory, uid: uid)
        let made = try #require(Files.status(environment.privateDirectory, followingSymlinks: false))
        #expect(made.kind == .directory && made.owner == uid && made.permissions == 0o700)
        // Found again on the next start.
        try ControlSocketPath.preparePrivateDirectory(environment.privateDirectory, uid: uid)
    }

    @Test func aDirectoryThatIsNotOursIsRefused() throws {
        let scratch = ScratchDirectory()
        defer { scratch.remove() }
        let uid = Files.effectiveUserID

        let loose = scratch.path + "/loose"
        try Files.createDirectory(loose, mode: 0o700)
        try Files.chmod(loose, 0o755)
        #expect(throws: ControlSocketPath.Refusal.self) {
            try ControlSocketPath.preparePrivateDirectory(loose, uid: uid)
        }

        let link = scratch.path + "/link"
        try Files.createDirectory(scratch.path + "/target", mode: 0o700)
        #expect(symlink(scratch.path + "/target", link) == 0)
        let refusal = try #require(throws: ControlSocketPath.Refusal.self) {
            try ControlSocketPath.preparePrivateDirectory(link, uid: uid)
        }
        #expect(refusal.description.contains("is a symlink"))

        // Owned by someone else (the same directory, checked for another uid).
        let mine = scratch.path + "/mine"
        try ControlSocketPath.preparePrivateDirectory(mine, uid: uid)
        let other = try #require(throws: ControlSocketPath.Refusal.self) {
            try ControlSocketPath.preparePrivateDirectory(mine, uid: uid &+ 4242)
        }
        #expect(other.description.contains("owned by uid \(uid)"))
    }

    @Test func reaperctlTrustsOnlySocketsOfRootOrItsUser() throws {
        let scratch = ScratchDirectory()
        defer { scratch.remove() }
        let path = scratch.path + "/control.sock"
        let socket = try Sockets.stream(family: AF_UNIX)
        try Sockets.bind(socket.raw, try #require(SocketAddress(unixPath: path)))
        let uid = Files.effectiveUserID
        try ControlSocketPath.checkTrusted(path, uid: uid)
        try ControlSocketPath.checkTrusted(scratch.path + "/absent.sock", uid: uid)
        #expect(throws: ControlSocketPath.Refusal.self) { try ControlSocketPath.checkTrusted(scratch.path, uid: uid) }
        guard uid == 0 else { return }  // the rest needs chown
        #expect(chown(path, 65534, 65534) == 0)
        let refusal = try #require(throws: ControlSocketPath.Refusal.self) {
            try ControlSocketPath.checkTrusted(path, uid: uid)
        }
        #expect(refusal.description.contains("owned by uid 65534"))
        // /tmp is root's but anyone may create entries in it: no delegation.
        try Files.chmod(scratch.path, 0o1777)
        #expect(throws: ControlSocketPath.Refusal.self) { try ControlSocketPath.checkTrusted(path, uid: uid) }

        // A directory root made for a service user, as RuntimeDirectory= makes
        // /run/reaperd for the DynamicUser, in a parent only root may write.
        try Files.chmod(scratch.path, 0o755)
        let runtime = scratch.path + "/runtime"
        try Files.createDirectory(runtime, mode: 0o750)
        try Files.chmod(runtime, 0o750)
        let service = runtime + "/control.sock"
        let serviceSocket = try Sockets.stream(family: AF_UNIX)
        try Sockets.bind(serviceSocket.raw, try #require(SocketAddress(unixPath: service)))
        #expect(chown(runtime, 61234, 61234) == 0 && chown(service, 61234, 61234) == 0)
        try ControlSocketPath.checkTrusted(service, uid: uid)
        // ... but not a socket of a third user in it, nor one in a directory others may write.
        #expect(chown(service, 61235, 61235) == 0)
        #expect(throws: ControlSocketPath.Refusal.self) { try ControlSocketPath.checkTrusted(service, uid: uid) }
        #expect(chown(service, 61234, 61234) == 0)
        try Files.chmod(runtime, 0o770)
        #expect(throws: ControlSocketPath.Refusal.self) { try ControlSocketPath.checkTrusted(service, uid: uid) }
    }
}
