/// `GET /metrics` in the Prometheus text format, served from the event loop.
/// Closed explicitly by the daemon's shutdown (`close()`): the loop holds this
/// handler strongly while it is registered, so a deinit would never run.
final class MetricsServer: EventHandler {
    /// nil once closed.
    private var socket: FileDescriptor?
    private var registration: Registration?
    /// Made once `self` exists (its answers call back into the server).
    private var clients: RequestClients?
    private unowned let daemon: Daemon
    static let maximumClients = 64

    /// What the port is bound to (`:0` in the file gets a real port).
    let address: String

    init(endpoint: Endpoint, daemon: Daemon) throws(ListeningSocket.OpenError) {
        self.daemon = daemon
        let socket = try ListeningSocket.open(listener: "metrics", endpoint: endpoint, backlog: 64, reusePort: false)
        let raw = socket.raw
        address = (try? Sockets.localAddress(raw)).map { "\($0)" } ?? endpoint.description
        self.socket = .some(socket)
        do {
            clients = RequestClients(
                loop: daemon.loop, maximum: Self.maximumClients, limit: MetricsRequest.maximumLength, refusal: nil,
                respond: { [unowned self] bytes, complete in self.answer(bytes, complete: complete) })
            registration = try daemon.loop.register(raw, interest: [.readable], handler: self)
        } catch {
            throw ListeningSocket.OpenError(listener: "metrics", endpoint: endpoint.description, failure: error)
        }
    }

    /// Stops serving: unwatched, then the clients and the port closed.
    func close() {
        if let registration { daemon.loop.deregister(registration) }
        registration = nil
        clients?.closeAll()
        clients = nil
        socket = nil
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        guard let raw = socket?.raw else { return }
        clients?.accept(from: raw, registration: self.registration)
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
