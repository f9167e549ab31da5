/// Keys of `[daemon]`, in the order the effective configuration prints them.
enum DaemonKey: String, CaseIterable {
    case controlSocket = "control_socket"
    case metrics
    case logLevel = "log_level"
    case logTarget = "log_target"
    case pollInterval = "poll_interval"
    case shutdownGrace = "shutdown_grace"
    case maxConnections = "max_connections"
    case fdStore = "fd_store"
    case fdStoreMinAge = "fd_store_min_age"
    case workers
}

/// Keys of `[defaults]`, which every listener section may also set.
enum ConnectionKey: String, CaseIterable {
    case keepalive
    case keepaliveIdle = "keepalive_idle"
    case keepaliveInterval = "keepalive_interval"
    case keepaliveCount = "keepalive_count"
    case userTimeout = "user_timeout"
    case idleTimeout = "idle_timeout"
    case halfCloseTimeout = "half_close_timeout"
    case connectTimeout = "connect_timeout"
    case upstreamKeepalive = "upstream_keepalive"
    case maxConnections = "max_connections"
    case backlog
    case reusePort = "reuse_port"
    case upstreamProxyProtocol = "upstream_proxy_protocol"
    case acceptProxyProtocol = "accept_proxy_protocol"
    case proxyHeaderTimeout = "proxy_header_timeout"
    case resolveInterval = "resolve_interval"
}

/// Keys only a `[listener:NAME]` section may set.
enum ListenerKey: String, CaseIterable {
    case listen
    case mode
    case upstream
}

/// Keys only a `[service:NAME]` section may set.
enum ServiceKey: String, CaseIterable {
    case unit
    case cgroup
    case ports
}

extension ConnectionKey {
    /// The `[defaults]` keys that mean something beside a service: the
    /// kernel's probes and the reaper's own limits. The rest shape a relay.
    static let adoptable: [ConnectionKey] = [
        .keepalive, .keepaliveIdle, .keepaliveInterval, .keepaliveCount, .userTimeout, .idleTimeout,
        .halfCloseTimeout,
    ]
}

/// Builds the message for a key its section does not know, pointing to where the key
/// belongs or to the closest known spelling.
enum ConfigKeySuggestion {
    static func unknownKeyMessage(_ key: String, section: ConfigSection.Kind) -> String {
        let here: String
        let known: [String]
        switch section {
        case .daemon:
            here = "[daemon]"
            known = DaemonKey.allCases.map(\.rawValue)
        case .defaults:
            here = "[defaults]"
            known = ConnectionKey.allCases.map(\.rawValue)
        case .listener(let name):
            here = "[listener:\(name)]"
            known = ListenerKey.allCases.map(\.rawValue) + ConnectionKey.allCases.map(\.rawValue)
        case .service(let name):
            here = "[service:\(name)]"
            known = ServiceKey.allCases.map(\.rawValue) + ConnectionKey.adoptable.map(\.rawValue)
            if ListenerKey(rawValue: key) != nil
                || ConnectionKey(rawValue: key).map({ !ConnectionKey.adoptable.contains($0) }) == true
            {
                return "\(key) is not allowed in \(here): it shapes a relay, and a service is adopted, not relayed"
            }
        }
        if ServiceKey(rawValue: key) != nil {
            return "\(key) is not allowed in \(here); set it in a [service:NAME] section"
        }
        if ListenerKey(rawValue: key) != nil {
            return "\(key) is not allowed in \(here); set it in a [listener:NAME] section"
        }
        if ConnectionKey(rawValue: key) != nil {
            return "\(key) is not allowed in \(here); it belongs in [defaults] or a [listener:NAME] section"
        }
        if DaemonKey(rawValue: key) != nil {
            return "\(key) is not allowed in \(here); it belongs in [daemon]"
        }
        var message = "unknown key \(key) in \(here)"
        if let suggestion = closest(to: key, among: known) {
            message += "; did you mean \(suggestion)?"
        }
        return message
    }

    /// The candidate nearest to `word` by edit distance, if near enough to be a typo.
    static func closest(to word: String, among candidates: [String]) -> String? {
        let limit = max(2, word.count / 4)
        let scored = candidates.map { (candidate: $0, distance: editDistance(word, $0)) }
        guard let best = scored.min(by: { $0.distance < $1.distance }), best.distance <= limit else {
            return nil
        }
        return best.candidate
    }

    /// Levenshtein distance over Unicode scalars.
    static func editDistance(_ lhs: String, _ rhs: String) -> Int {
        let a = Array(lhs.unicodeScalars)
        let b = Array(rhs.unicodeScalars)
        guard !a.isEmpty else { return b.count }
        guard !b.isEmpty else { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
