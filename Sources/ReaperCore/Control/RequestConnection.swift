/// One short request/response exchange on the control socket or the metrics
/// port: read at most `limit` bytes until `terminator`, within `deadline`;
/// answer; close. A garbage, oversized or slow request gets an error or is cut
/// off, and never blocks the loop.
final class RequestConnection: EventHandler {
    enum Verdict {
        /// Send these bytes and close.
        case respond([UInt8])
        /// Keep reading.
        case needMore
    }

    private var socket: FileDescriptor?
    private var registration: Registration?
    private var request: [UInt8] = []
    private var response: [UInt8] = []
    private var sent = 0
    private var timer: LoopTimer?
    private let limit: Int
    private let loop: EventLoop
    /// Decides on the bytes read so far; `complete` is true at EOF or the limit.
    private let respond: (_ request: [UInt8], _ complete: Bool) -> Verdict
    private let onClose: (RequestConnection) -> Void

    init(
        socket: consuming FileDescriptor, loop: EventLoop, limit: Int, deadline: Duration,
        respond: @escaping ([UInt8], Bool) -> Verdict, onClose: @escaping (RequestConnection) -> Void
    ) throws(SystemError) {
        let raw = socket.raw
        self.socket = .some(socket)
        self.loop = loop
        self.limit = limit
        self.respond = respond
        self.onClose = onClose
        registration = try loop.register(raw, interest: [.readable], handler: self)
        timer = loop.schedule(after: deadline) { [weak self] in self?.close() }
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        guard let fd = socket?.raw else { return }
        if !response.isEmpty {
            flush(fd)
            return
        }
        if events.contains(.error) {
            close()
            return
        }
        var chunk = [UInt8](repeating: 0, count: 4096)
        while socket != nil && response.isEmpty {
            let want = min(chunk.count, limit + 1 - request.count)
            let result = chunk.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) -> IOResult<Int> in
                    try Sockets.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<want]))
                }
            }
            switch result {
            case .failure:
                close()
                return
            case .success(.wouldBlock):
                return
            case .success(.processed(let count)):
                request.append(contentsOf: chunk[0..<count])
                let complete = count == 0 || request.count > limit
                switch respond(request, complete) {
                case .respond(let bytes):
                    response = bytes
                    flush(fd)
                    return
                case .needMore:
                    if complete {
                        close()
                        return
                    }
                }
            }
        }
    }

    private func flush(_ fd: Int32) {
        while sent < response.count {
            let result = response.withUnsafeBytes { raw in
                Result { () throws(SystemError) -> IOResult<Int> in
                    try Sockets.write(fd, from: UnsafeRawBufferPointer(rebasing: raw[sent...]))
                }
            }
            switch result {
            case .success(.processed(let count)):
                sent += count
            case .success(.wouldBlock):
                if let registration { loop.modify(registration, interest: [.writable]) }
                return
            case .failure:
                close()
                return
            }
        }
        close()
    }

    func close() {
        timer?.cancel()
        timer = nil
        if let registration { loop.deregister(registration) }
        registration = nil
        guard socket != nil else { return }
        socket = nil
        onClose(self)
    }
}

/// Accepting on a small service socket (control, metrics). Out of descriptors,
/// accept fails while the client stays queued and the level-triggered socket
/// stays readable: the socket is left unwatched for a moment instead of spinning.
struct ServiceAcceptor {
    static let pause = Duration.milliseconds(250)

    /// The next queued client; nil when there is none or accepting must wait.
    static func next(_ fd: Int32, registration: Registration?, loop: EventLoop) -> FileDescriptor? {
        let result: IOResult<FileDescriptor>
        do {
            result = try Sockets.accept(fd)
        } catch {
            if error.errno.isAcceptAgain && !error.errno.isDescriptorExhaustion { return nil }
            guard let registration else { return nil }
            loop.modify(registration, interest: [])
            loop.schedule(after: pause) { loop.modify(registration, interest: [.readable]) }
            return nil
        }
        guard case .processed(let client) = consume result else { return nil }
        return client
    }
}

/// The clients of one request/response socket (control or metrics): accepts up
/// to `maximum` at once, each read within `limit` bytes and five seconds.
final class RequestClients {
    private var clients: [ObjectIdentifier: RequestConnection] = [:]
    private let loop: EventLoop
    private let maximum: Int
    private let limit: Int
    /// Sent to a client past `maximum` before it is closed; nil closes silently.
    private let refusal: [UInt8]?
    private let respond: ([UInt8], Bool) -> RequestConnection.Verdict

    init(
        loop: EventLoop, maximum: Int, limit: Int, refusal: [UInt8]?,
        respond: @escaping ([UInt8], Bool) -> RequestConnection.Verdict
    ) {
        self.loop = loop
        self.maximum = maximum
        self.limit = limit
        self.refusal = refusal
        self.respond = respond
    }

    /// Accepts a batch of queued clients from the listening socket `fd`.
    func accept(from fd: Int32, registration: Registration?) {
        for _ in 0..<16 {
            guard let client = ServiceAcceptor.next(fd, registration: registration, loop: loop) else { return }
            guard clients.count < maximum else {
                if let refusal { _ = try? Sockets.send(client.raw, refusal) }
                continue
            }
            guard
                let connection = try? RequestConnection(
                    socket: client, loop: loop, limit: limit, deadline: .seconds(5), respond: respond,
                    onClose: { [unowned self] closed in self.clients[ObjectIdentifier(closed)] = nil })
            else { continue }
            clients[ObjectIdentifier(connection)] = connection
        }
    }

    func closeAll() {
        for client in Array(clients.values) { client.close() }
    }
}
