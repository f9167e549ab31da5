internal import Glibc

/// The control socket: a Unix stream socket, mode 0660, never on the network.
final class ControlServer: EventHandler {
    let path: String
    private let socket: FileDescriptor
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
            try Files.rename(temporary, path)
        } catch {
            try? Files.unlink(temporary)
            throw error
        }
        let raw = socket.raw
        self.socket = socket
        clients = RequestClients(
            loop: daemon.loop, maximum: Self.maximumClients, limit: ControlRequest.maximumLength,
            refusal: Array("ERR too many control connections\n".utf8),
            respond: { [unowned self] bytes, complete in self.answer(bytes, complete: complete) })
        registration = try daemon.loop.register(raw, interest: [.readable], handler: self)
    }

    deinit {
        if let registration { daemon.loop.deregister(registration) }
        clients?.closeAll()
        try? Files.unlink(path)
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        clients?.accept(from: socket.raw, registration: self.registration)
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
