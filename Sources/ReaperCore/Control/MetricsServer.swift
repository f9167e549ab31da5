/// `GET /metrics` in the Prometheus text format, served from the event loop.
final class MetricsServer: EventHandler {
    private let socket: FileDescriptor
    private var registration: Registration?
    private var clients: [ObjectIdentifier: RequestConnection] = [:]
    private unowned let daemon: Daemon
    static let maximumClients = 64

    init(endpoint: Endpoint, daemon: Daemon) throws(ListeningSocket.OpenError) {
        self.daemon = daemon
        socket = try ListeningSocket.open(listener: "metrics", endpoint: endpoint, backlog: 64, reusePort: false)
        do {
            registration = try daemon.loop.register(socket.raw, interest: [.readable], handler: self)
        } catch {
            throw ListeningSocket.OpenError(listener: "metrics", endpoint: endpoint.description, failure: error)
        }
    }

    deinit {
        if let registration { daemon.loop.deregister(registration) }
        for client in clients.values { client.close() }
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        for _ in 0..<16 {
            guard let client = ServiceAcceptor.next(socket.raw, registration: registration, loop: daemon.loop) else {
                return
            }
            guard clients.count < Self.maximumClients else { continue }
            let connection: RequestConnection
            do {
                connection = try RequestConnection(
                    socket: client, loop: daemon.loop, limit: MetricsRequest.maximumLength, deadline: .seconds(5),
                    respond: { [unowned self] bytes, complete in self.answer(bytes, complete: complete) },
                    onClose: { [unowned self] closed in self.clients[ObjectIdentifier(closed)] = nil })
            } catch {
                continue
            }
            clients[ObjectIdentifier(connection)] = connection
        }
    }

    private func answer(_ bytes: [UInt8], complete: Bool) -> RequestConnection.Verdict {
        switch MetricsRequest.judge(bytes, complete: complete) {
        case .needMore:
            return .needMore
        case .error(let status, let reason):
            return .respond(
                MetricsRequest.response(
                    status: status, reason: reason, contentType: "text/plain; charset=utf-8", body: "\(reason)\n"))
        case .metrics(let headOnly):
            return .respond(
                MetricsRequest.response(
                    status: 200, reason: "OK", contentType: "text/plain; version=0.0.4; charset=utf-8",
                    body: daemon.metricsPage(), headOnly: headOnly))
        }
    }
}
