internal import Glibc

/// The per-socket TCP options reaperd sets: keepalive, user timeout, no delay.
public enum SocketOptions {
    /// Keepalive and user timeout from a listener's settings. Applied to every
    /// accepted client socket, to upstream sockets when `upstream_keepalive` is on,
    /// and again to live sockets when a reload changes the values.
    public static func applyKeepalive(_ fd: Int32, _ settings: ConnectionSettings) throws(SystemError) {
        try Sockets.setOption(fd, level: SOL_SOCKET, name: SO_KEEPALIVE, value: settings.keepalive ? 1 : 0)
        if settings.keepalive {
            try Sockets.setOption(
                fd, level: Int32(IPPROTO_TCP), name: TCP_KEEPIDLE, value: Int32(settings.keepaliveIdle))
            try Sockets.setOption(
                fd, level: Int32(IPPROTO_TCP), name: TCP_KEEPINTVL, value: Int32(settings.keepaliveInterval))
            try Sockets.setOption(
                fd, level: Int32(IPPROTO_TCP), name: TCP_KEEPCNT, value: Int32(settings.keepaliveCount))
        }
        try Sockets.setOption(
            fd, level: Int32(IPPROTO_TCP), name: TCP_USER_TIMEOUT,
            value: Int32(bitPattern: settings.userTimeoutMilliseconds))
    }

    /// Turns keepalive and the user timeout off again (a reload set
    /// `upstream_keepalive = no`).
    public static func disableKeepalive(_ fd: Int32) {
        _ = try? Sockets.setOption(fd, level: SOL_SOCKET, name: SO_KEEPALIVE, value: 0)
        _ = try? Sockets.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_USER_TIMEOUT, value: 0)
    }

    /// Relayed bytes go out at once: coalescing is the endpoints' business, and
    /// Nagle on a relay only adds a delay per hop.
    public static func disableNagle(_ fd: Int32) {
        _ = try? Sockets.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
    }

    /// Keepalive settings as the kernel holds them, for tests and `reaperctl`.
    public struct Readback: Equatable, Sendable {
        public var keepalive: Bool
        public var idle: Int32
        public var interval: Int32
        public var count: Int32
        public var userTimeoutMilliseconds: UInt32
    }

    public static func readKeepalive(_ fd: Int32) throws(SystemError) -> Readback {
        let tcp = Int32(IPPROTO_TCP)
        return Readback(
            keepalive: try Sockets.option(fd, level: SOL_SOCKET, name: SO_KEEPALIVE) != 0,
            idle: try Sockets.option(fd, level: tcp, name: TCP_KEEPIDLE),
            interval: try Sockets.option(fd, level: tcp, name: TCP_KEEPINTVL),
            count: try Sockets.option(fd, level: tcp, name: TCP_KEEPCNT),
            userTimeoutMilliseconds: UInt32(bitPattern: try Sockets.option(fd, level: tcp, name: TCP_USER_TIMEOUT)))
    }
}
