internal import Glibc

/// The control socket: a Unix stream socket, mode 0660, never on the network.
///
/// Teardown is explicit (`close()`, from the daemon's shutdown): the loop holds
/// this handler strongly while it is registered, so a deinit would never run.
final class ControlServer: EventHandler {
    let path: String
    /// nil once closed.
    private var socket: FileDescriptor?
    /// The file bind(2) made at `path`, so `close()` removes only our own.
    private let identity: Files.Identity?
    private var registration: Registration?
    /// Made once `self` exists (its answers call back into the server).
    private var clients: RequestClients?
    private unowned let daemon: Daemon
    static let maximumClients = 64

    /// Creates the socket safely: a stale socket left by a dead daemon is
    /// replaced; a live one (another daemon answers) or a non-socket at the path
    /// is an error. It is bound under a temporary name, given its mode, then
    /// renamed into place, so it never has a wider mode and never follows a
    /// symlink an attacker planted at the path.
    init(path: String, daemon: Daemon) throws(SystemError) {
        self.path = path
        self.daemon = daemon
        guard let address = SocketAddress(unixPath: path) else { throw SystemError("bind", Errno(ENAMETOOLONG)) }
        if Files.exists(path) {
            guard Files.isSocket(path) else { throw SystemError("bind (not a socket)", .exists) }
            let probe = try Sockets.stream(family: AF_UNIX)
            if case .processed = (try? Sockets.connect(probe.raw, address)) ?? .wouldBlock {
                throw SystemError("bind (another reaperd answers there)", .addressInUse)
            }
        }
        let temporary = path + ".\(Files.processID).tmp"
        guard let temporaryAddress = SocketAddress(unixPath: temporary) else {
            throw SystemError("bind", Errno(ENAMETOOLONG))
        }
        try? Files.unlink(temporary)
        let socket = try Sockets.stream(family: AF_UNIX)
        try Sockets.bind(socket.raw, temporaryAddress)
        do {
            try Files.chmod(temporary, 0o660)
            try Sockets.listen(socket.raw, backlog: 16)
            // rename(2) keeps the inode: this is what `path` is while it is ours.
            identity = Files.identity(temporary)
            try Files.rename(temporary, path)
        } catch {
            try? Files.unlink(temporary)
            throw error
        }
        let raw = socket.raw
        self.socket = .some(socket)
        clients = RequestClients(
            loop: daemon.loop, maximum: Self.maximumClients, limit: ControlRequest.maximumLength,
            refusal: Array("ERR too many control connections\n".utf8),
            respond: { [unowned self] bytes, complete in self.answer(bytes, complete: complete) })
        do {
            registration = try daemon.loop.register(raw, interest: [.readable], handler: self)
        } catch {
            close()
            throw error
        }
    }

    /// Stops serving, in the reverse order of `init`: unwatched, the path
    /// removed (so nobody connects to a socket about to close), the clients and
    /// then the socket closed. The path is unlinked only while it is still the
    /// file this server bound: a newer reaperd that has put its own socket there
    /// since keeps it. (lstat-then-unlink leaves a window, but only another
    /// process of the same user could replace the file in it.)
    func close() {
        if let registration { daemon.loop.deregister(registration) }
        registration = nil
        if socket != nil, let identity, Files.identity(path) == identity { try? Files.unlink(path) }
        clients?.closeAll()
        clients = nil
        socket = nil
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        guard let raw = socket?.raw else { return }
        clients?.accept(from: raw, registration: self.registration)
    }

    private func answer(_ bytes: [UInt8], complete: Bool) -> RequestConnection.Verdict {
        guard let newline = bytes.firstIndex(of: 0x0A) else {
            if bytes.count > ControlRequest.maximumLength {
                return .respond(ControlResponse.error("request longer than \(ControlRequest.maximumLength) bytes"))
            }
            // A request without a newline is answered at EOF.
            return complete && !bytes.isEmpty ? answerLine(bytes[...]) : .needMore
        }
        return answerLine(bytes[..<newline])
    }

    private func answerLine(_ line: ArraySlice<UInt8>) -> RequestConnection.Verdict {
        switch ControlRequest.parse(line) {
        case .success(let request): .respond(daemon.answer(request))
        case .failure(let error): .respond(ControlResponse.error(error.message))
        }
    }
}
