/// Where a relay listener's new connections go: the addresses to try, in
/// order, and the name they came from (nil for a numeric upstream).
struct UpstreamRoute {
    let name: String?
    let addresses: [SocketAddress]
}

/// What a listener whose upstream is a host name knows of the name: the last
/// good answer and how the lookups are going. A failed lookup never drops the
/// last good answer (a DNS outage must not stop a relay that works); it is
/// reported once per run of failures, and again when the name resolves again.
/// Owned by the loop thread, through the listener's state.
struct UpstreamResolution {
    let host: String
    let port: UInt16
    /// The last good answer, in getaddrinfo's order; empty until the first.
    private(set) var addresses: [SocketAddress] = []
    /// When the last good answer came.
    private(set) var resolvedAt: Instant?
    /// When the current run of failures began; nil while lookups succeed.
    private(set) var failingSince: Instant?
    /// What the last failed lookup said.
    private(set) var lastError: String?
    /// The ticket of the lookup in flight, if one is.
    var pending: UInt64?
    /// The next lookup, while none is in flight.
    var timer: LoopTimer?

    /// After a failure the next lookup comes sooner than resolve_interval,
    /// at most this long after: meanwhile clients are refused (no answer yet)
    /// or sent to addresses that may be stale.
    static let retryAfterFailure = Duration.seconds(5)

    init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// `host:port`, as the configuration writes it.
    var name: String { "\(host):\(port)" }

    /// What one lookup's answer changed, for the log.
    enum Event: Equatable {
        /// An answer: the first for this name, different from the last one,
        /// or ending a run of failures.
        case resolved(first: Bool, changed: Bool, recovered: Bool)
        /// No answer: `streakStarted` for the first failure of a run;
        /// `keeping` when a last good answer stays in use.
        case failed(streakStarted: Bool, keeping: Bool)
    }

    /// Takes in one lookup's answer.
    mutating func record(_ result: Result<[SocketAddress], LookupError>, at now: Instant) -> Event {
        pending = nil
        switch result {
        case .success(let answer):
            let first = resolvedAt == nil
            let changed = !first && answer.map(\.description) != addresses.map(\.description)
            let recovered = failingSince != nil
            addresses = answer
            resolvedAt = now
            failingSince = nil
            return .resolved(first: first, changed: changed, recovered: recovered)
        case .failure(let error):
            lastError = error.message
            let started = failingSince == nil
            if started { failingSince = now }
            return .failed(streakStarted: started, keeping: !addresses.isEmpty)
        }
    }

    /// How long after an answer the next lookup is.
    static func delay(after event: Event, interval: Duration) -> Duration {
        switch event {
        case .resolved: interval
        case .failed: min(interval, retryAfterFailure)
        }
    }

    /// The route this name gives new connections; nil while it has never resolved.
    var route: UpstreamRoute? {
        addresses.isEmpty ? nil : UpstreamRoute(name: name, addresses: addresses)
    }
}
