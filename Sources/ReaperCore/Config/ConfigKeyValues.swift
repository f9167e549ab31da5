// How each key's text becomes a typed value, with the ranges of SPEC §3.

private let hour: Int64 = 3_600_000

extension DaemonKey {
    func apply(_ value: String, to daemon: inout DaemonSettings) throws(ConfigValueError) {
        switch self {
        case .controlSocket:
            daemon.controlSocket = try ConfigValues.socketPath(value)
        case .metrics:
            daemon.metrics = value == "off" ? nil : try ConfigValues.connectableEndpoint(value, allowUnix: false)
        case .logLevel:
            daemon.logLevel = try ConfigValues.choice(value, of: LogLevel.self)
        case .logTarget:
            daemon.logTarget = try ConfigValues.choice(value, of: LogTarget.self)
        case .pollInterval:
            daemon.pollInterval = try ConfigValues.duration(value, in: 10...hour)
        case .shutdownGrace:
            daemon.shutdownGrace = try ConfigValues.duration(value, in: 0...hour)
        case .maxConnections:
            daemon.maxConnections = try ConfigValues.integer(value, in: 1...10_000_000)
        case .fdStore:
            daemon.fdStore = try ConfigValues.choice(value, of: FDStoreMode.self)
        case .fdStoreMinAge:
            daemon.fdStoreMinAge = try ConfigValues.duration(value, in: 0...hour)
        case .workers:
            daemon.workers =
                value == "auto" ? .auto : .count(try ConfigValues.integer(value, in: 1...WorkerCount.maximum))
        }
    }
}

extension ConnectionKey {
    func apply(_ value: String, to settings: inout ConnectionSettings) throws(ConfigValueError) {
        switch self {
        case .keepalive:
            settings.keepalive = try ConfigValues.boolean(value)
        case .keepaliveIdle:
            settings.keepaliveIdle = try ConfigValues.wholeSeconds(value, in: 1...32767)
        case .keepaliveInterval:
            settings.keepaliveInterval = try ConfigValues.wholeSeconds(value, in: 1...32767)
        case .keepaliveCount:
            settings.keepaliveCount = try ConfigValues.integer(value, in: 1...127)
        case .userTimeout:
            settings.userTimeout = try ConfigValues.userTimeout(value)
        case .idleTimeout:
            settings.idleTimeout = try ConfigValues.duration(value, in: 0...720 * hour)
        case .halfCloseTimeout:
            settings.halfCloseTimeout = try ConfigValues.duration(value, in: 0...720 * hour)
        case .connectTimeout:
            settings.connectTimeout = try ConfigValues.duration(value, in: 1...hour)
        case .upstreamKeepalive:
            settings.upstreamKeepalive = try ConfigValues.boolean(value)
        case .maxConnections:
            settings.maxConnections = try ConfigValues.integer(value, in: 1...10_000_000)
        case .backlog:
            settings.backlog = try ConfigValues.integer(value, in: 1...65535)
        case .reusePort:
            settings.reusePort = try ConfigValues.boolean(value)
        case .upstreamProxyProtocol:
            settings.upstreamProxyProtocol = try ConfigValues.choice(value, of: ProxyProtocolVersion.self)
        case .acceptProxyProtocol:
            settings.acceptProxyProtocol = try ConfigValues.boolean(value)
        case .proxyHeaderTimeout:
            settings.proxyHeaderTimeout = try ConfigValues.duration(value, in: 1...hour)
        case .resolveInterval:
            // At least a second: a lookup a second is already more than any
            // TTL-respecting client asks; at most a day.
            settings.resolveInterval = try ConfigValues.duration(value, in: 1000...24 * hour)
        }
    }
}

extension ConfigValues {
    /// `auto`, `0` (any zero duration) for off, or 1 ms ... `Int32.max` ms.
    static func userTimeout(_ text: String) throws(ConfigValueError) -> UserTimeout {
        if text == "auto" { return .auto }
        let milliseconds = try milliseconds(text)
        if milliseconds == 0 { return .off }
        guard milliseconds <= Int64(Int32.max) else {
            throw ConfigValueError("\(text) is out of range (auto, 0 or 1ms ... \(Int32.max)ms)")
        }
        return .after(.milliseconds(milliseconds))
    }

    /// Where a relay connects: an address or a host name with a real TCP port, or a Unix path.
    static func upstream(_ text: String) throws(ConfigValueError) -> Upstream {
        switch Upstream.parse(text) {
        case .success(.address):
            return .address(try connectableEndpoint(text, allowUnix: true))
        case .success(let upstream):
            if upstream.port == 0 { throw ConfigValueError("\(text): port 0 is not allowed here (1 ... 65535)") }
            return upstream
        case .failure(let error):
            throw ConfigValueError(error.message)
        }
    }

    /// An address something connects to: a real TCP port, or (if allowed) a Unix path.
    static func connectableEndpoint(_ text: String, allowUnix: Bool) throws(ConfigValueError) -> Endpoint {
        let endpoint = try endpoint(text)
        if endpoint.isUnix && !allowUnix {
            throw ConfigValueError("\(text): a unix socket is not allowed here; use HOST:PORT or [V6]:PORT")
        }
        if endpoint.port == 0 {
            throw ConfigValueError("\(text): port 0 is not allowed here (1 ... 65535)")
        }
        return endpoint
    }
}
