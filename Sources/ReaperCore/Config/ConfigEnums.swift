/// How much the daemon logs, named like syslog priorities so the journal and the
/// configuration use the same words. Ordered by severity: `debug < info < notice < warning < err`.
public enum LogLevel: String, CaseIterable, Sendable, Comparable {
    case debug, info, notice, warning, err

    private var severity: Int {
        switch self {
        case .debug: 0
        case .info: 1
        case .notice: 2
        case .warning: 3
        case .err: 4
        }
    }

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool {
        lhs.severity < rhs.severity
    }
}

/// Where log entries go: `auto` means the journal when running under systemd, else stderr.
public enum LogTarget: String, CaseIterable, Sendable {
    case auto, journal, console
}

/// What a listener does with an accepted client: relay it to `upstream`, or echo its bytes back.
public enum ListenerMode: String, CaseIterable, Sendable {
    case relay, echo
}

/// The `user_timeout` setting (`TCP_USER_TIMEOUT`): how long sent data may stay unacknowledged.
public enum UserTimeout: Hashable, Sendable {
    /// `keepalive_idle + keepalive_interval * keepalive_count`, so data in flight dies as fast as an idle peer.
    case auto
    /// Written `0`: the kernel default (retransmit for many minutes).
    case off
    /// An explicit limit, 1 ms ... 2147483647 ms.
    case after(Duration)
}

/// `[daemon] fd_store`: whether established connections are handed to systemd's
/// file descriptor store so they survive a restart or crash.
public enum FDStoreMode: String, CaseIterable, Sendable {
    /// On when systemd says the service has a store (`$FDSTORE`, set by systemd 254+
    /// and by the shipped unit for 252).
    case auto
    /// On whenever reaperd runs under systemd (NOTIFY_SOCKET set).
    case yes
    case no
}

/// `upstream_proxy_protocol`: which PROXY protocol header a relay sends its
/// upstream ahead of the client's bytes, if any.
public enum ProxyProtocolVersion: String, CaseIterable, Sendable {
    case off, v1, v2
}
