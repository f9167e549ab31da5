/// Per-connection tuning: the `[defaults]` section, and each listener's copy of it with
/// that listener's overrides applied.
public struct ConnectionSettings: Hashable, Sendable {
    /// `SO_KEEPALIVE` on the client socket.
    public var keepalive: Bool
    /// `TCP_KEEPIDLE` in seconds, 1 ... 32767.
    public var keepaliveIdle: Int
    /// `TCP_KEEPINTVL` in seconds, 1 ... 32767.
    public var keepaliveInterval: Int
    /// `TCP_KEEPCNT`, 1 ... 127.
    public var keepaliveCount: Int
    /// `TCP_USER_TIMEOUT`; see `userTimeoutMilliseconds` for the value set on sockets.
    public var userTimeout: UserTimeout
    /// Reap after this long without bytes in either direction; zero is off. At most 720 h.
    public var idleTimeout: Duration
    /// After one side's FIN, how long the other may keep sending; zero is off. At most 720 h.
    public var halfCloseTimeout: Duration
    /// Deadline for connecting to the upstream, 1 ms ... 1 h.
    public var connectTimeout: Duration
    /// Apply the same keepalive settings to the upstream socket.
    public var upstreamKeepalive: Bool
    /// Connection limit of one listener, 1 ... 10 000 000.
    public var maxConnections: Int
    /// `listen(2)` backlog, 1 ... 65535.
    public var backlog: Int
    /// `SO_REUSEPORT` in addition to `SO_REUSEADDR`.
    public var reusePort: Bool
    /// The PROXY protocol header a relay sends its upstream first, if any.
    public var upstreamProxyProtocol: ProxyProtocolVersion
    /// Each client starts with a PROXY protocol header (v1 or v2, told apart by
    /// its first bytes) from a load balancer in front; the client it names is
    /// the connection's peer.
    public var acceptProxyProtocol: Bool
    /// How long a client may take to send that header, 1 ms ... 1 h.
    public var proxyHeaderTimeout: Duration
    /// How often an upstream given by name is looked up again, 1 s ... 24 h.
    public var resolveInterval: Duration

    /// Every key at its documented default (SPEC §3).
    public static let defaults = ConnectionSettings()

    /// Settings with every parameter at its documented default unless given.
    public init(
        keepalive: Bool = true,
        keepaliveIdle: Int = 60,
        keepaliveInterval: Int = 10,
        keepaliveCount: Int = 3,
        userTimeout: UserTimeout = .auto,
        idleTimeout: Duration = .zero,
        halfCloseTimeout: Duration = .seconds(60),
        connectTimeout: Duration = .seconds(5),
        upstreamKeepalive: Bool = true,
        maxConnections: Int = 10_000,
        backlog: Int = 4096,
        reusePort: Bool = false,
        upstreamProxyProtocol: ProxyProtocolVersion = .off,
        acceptProxyProtocol: Bool = false,
        proxyHeaderTimeout: Duration = .seconds(5),
        resolveInterval: Duration = .seconds(30)
    ) {
        self.keepalive = keepalive
        self.keepaliveIdle = keepaliveIdle
        self.keepaliveInterval = keepaliveInterval
        self.keepaliveCount = keepaliveCount
        self.userTimeout = userTimeout
        self.idleTimeout = idleTimeout
        self.halfCloseTimeout = halfCloseTimeout
        self.connectTimeout = connectTimeout
        self.upstreamKeepalive = upstreamKeepalive
        self.maxConnections = maxConnections
        self.backlog = backlog
        self.reusePort = reusePort
        self.upstreamProxyProtocol = upstreamProxyProtocol
        self.acceptProxyProtocol = acceptProxyProtocol
        self.proxyHeaderTimeout = proxyHeaderTimeout
        self.resolveInterval = resolveInterval
    }

    /// `TCP_USER_TIMEOUT` in milliseconds as set on sockets: 0 when off; for `auto`,
    /// `(idle + interval * count) * 1000`. The kernel reads the option as a C `int` and
    /// rejects negative values, so the result is capped at `Int32.max` (about 24.8 days);
    /// an explicit duration is never 0 (which would mean off), at least 1.
    public var userTimeoutMilliseconds: UInt32 {
        let limit = Int64(Int32.max)
        switch userTimeout {
        case .off:
            return 0
        case .auto:
            let probing = ConfigArithmetic.multiply(Int64(keepaliveInterval), Int64(keepaliveCount))
            let seconds = ConfigArithmetic.add(Int64(keepaliveIdle), probing)
            let milliseconds = ConfigArithmetic.multiply(max(seconds, 0), 1000)
            return UInt32(min(milliseconds, limit))
        case .after(let duration):
            let milliseconds = ConfigDuration.milliseconds(of: duration)
            return UInt32(min(max(milliseconds, 1), limit))
        }
    }
}
