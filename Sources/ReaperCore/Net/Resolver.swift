/// A host name to look up, with the ticket its answer comes back under.
struct LookupRequest: Sendable {
    let ticket: UInt64
    let host: String
    let port: UInt16
}

/// What getaddrinfo said about one request, and how long it took.
struct LookupAnswer: Sendable {
    let ticket: UInt64
    let result: Result<[SocketAddress], LookupError>
    let took: Duration
}

/// Host name lookups off the event loop: getaddrinfo blocks for as long as
/// DNS takes (seconds when a server does not answer), so one thread of its
/// own runs the lookups, one after another, and posts each answer back; the
/// loop wakes on an eventfd and `onAnswer` runs on the loop thread. The loop
/// never waits for DNS.
///
/// One thread: lookups are rare (one per named upstream per resolve_interval)
/// and ordered; a server that does not answer delays the names behind it by
/// resolv.conf's timeout, which every answer reports in `took`.
///
/// Created only when some upstream is a name: a numeric upstream costs no
/// thread and no descriptor.
final class Resolver: EventHandler {
    private let queue: ResolverQueue
    private let loop: EventLoop
    private var registration: Registration?
    private var nextTicket: UInt64 = 1
    private let onAnswer: (LookupAnswer) -> Void

    /// Starts the thread and watches its answers on `loop`.
    init(loop: EventLoop, onAnswer: @escaping (LookupAnswer) -> Void) throws(SystemError) {
        let queue = try ResolverQueue()
        self.queue = queue
        self.loop = loop
        self.onAnswer = onAnswer
        registration = try loop.register(queue.answered.descriptor, interest: [.readable], handler: self)
        do {
            try Threads.startDetached(name: "reaperd-resolve") { queue.serve() }
        } catch {
            close()
            throw error
        }
    }

    /// Queues a lookup of `host`; its answer comes to `onAnswer` with the returned ticket.
    func lookUp(host: String, port: UInt16) -> UInt64 {
        let ticket = nextTicket
        nextTicket += 1
        queue.submit(LookupRequest(ticket: ticket, host: host, port: port))
        return ticket
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        queue.answered.wait()
        for answer in queue.takeAnswers() { onAnswer(answer) }
    }

    /// Stops watching and tells the thread to finish. A lookup in progress
    /// cannot be interrupted: the thread ends when it returns, its answer
    /// dropped, and the descriptors close with the last reference to them.
    func close() {
        if let registration { loop.deregister(registration) }
        registration = nil
        queue.stop()
    }
}

/// What the loop thread and the resolver thread share, and nothing else:
/// requests one way and answers the other under one lock, and an eventfd
/// each way to wake the side that waits (the thread sleeps in a blocking
/// read of `requested`; the loop watches `answered`).
private final class ResolverQueue: Sendable {
    private struct State {
        var requests: [LookupRequest] = []
        var answers: [LookupAnswer] = []
        var stopped = false
    }

    private let state = Lock(State())
    let requested: EventCounter
    let answered: EventCounter

    init() throws(SystemError) {
        requested = try EventCounter(blocking: true)
        answered = try EventCounter(blocking: false)
    }

    func submit(_ request: LookupRequest) {
        state.withLock { $0.requests.append(request) }
        requested.signal()
    }

    func takeAnswers() -> [LookupAnswer] {
        state.withLock { state in
            let answers = state.answers
            state.answers = []
            return answers
        }
    }

    func stop() {
        state.withLock { $0.stopped = true }
        requested.signal()
    }

    /// The resolver thread's body: sleeps until there is a request, looks it
    /// up, posts the answer; returns once stopped.
    func serve() {
        while true {
            requested.wait()
            while let request = next() {
                let started = Instant.now()
                let result = AddressLookup.tcpAddresses(host: request.host, port: request.port)
                let answer = LookupAnswer(ticket: request.ticket, result: result, took: Instant.now().since(started))
                let posted = state.withLock { state in
                    guard !state.stopped else { return false }
                    state.answers.append(answer)
                    return true
                }
                guard posted else { return }
                answered.signal()
            }
            if state.withLock({ $0.stopped }) { return }
        }
    }

    /// The oldest request, or nil when there is none or the queue is stopped.
    private func next() -> LookupRequest? {
        state.withLock { state in
            guard !state.stopped, !state.requests.isEmpty else { return nil }
            return state.requests.removeFirst()
        }
    }
}
