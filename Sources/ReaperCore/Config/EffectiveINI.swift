extension Configuration {
    /// The configuration as INI with every key and every default filled in, as
    /// `reaperd --check-config` prints it. Each listener section lists all connection keys
    /// fully resolved. The text parses back to an equal configuration (apart from
    /// `source`), and printing that again gives the same bytes.
    public func effectiveINI() -> String {
        var lines = ["# reaperd effective configuration: every key, defaults filled in", "", "[daemon]"]
        lines += DaemonKey.allCases.map { "\($0.rawValue) = \($0.text(in: daemon))" }
        lines += ["", "[defaults]"]
        lines += ConnectionKey.allCases.map { "\($0.rawValue) = \($0.text(in: defaults))" }
        for listener in listeners {
            lines += ["", "[listener:\(listener.name)]"]
            if !listener.listen.isEmpty {
                lines.append("listen = \(listener.listen.map(\.description).joined(separator: ", "))")
            }
            lines.append("mode = \(listener.mode.rawValue)")
            switch listener.upstream {
            case .name(let host, let port)?:
                // DNS may be down where the file is checked (a build host, early boot).
                lines.append("upstream = \(host):\(port)  # a host name: looked up by reaperd, not by this check")
            case .address(let endpoint)?:
                lines.append("upstream = \(endpoint)")
            case nil:
                break
            }
            // An echo listener has no upstream to send a PROXY header to.
            let keys = ConnectionKey.allCases.filter { listener.mode == .relay || $0 != .upstreamProxyProtocol }
            lines += keys.map { "\($0.rawValue) = \($0.text(in: listener.connection))" }
        }
        for service in services {
            lines += ["", "[service:\(service.name)]"]
            switch service.target {
            case .unit(let name): lines.append("unit = \(name)")
            case .cgroup(let path): lines.append("cgroup = \(path)")
            }
            if !service.ports.isEmpty {
                lines.append("ports = \(service.ports.map(String.init).joined(separator: ", "))")
            }
            lines += ConnectionKey.adoptable.map { "\($0.rawValue) = \($0.text(in: service.connection))" }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension DaemonKey {
    func text(in daemon: DaemonSettings) -> String {
        switch self {
        case .controlSocket: daemon.controlSocket
        case .metrics: daemon.metrics?.description ?? "off"
        case .logLevel: daemon.logLevel.rawValue
        case .logTarget: daemon.logTarget.rawValue
        case .pollInterval: ConfigDuration.text(daemon.pollInterval)
        case .shutdownGrace: ConfigDuration.text(daemon.shutdownGrace)
        case .maxConnections: "\(daemon.maxConnections)"
        case .fdStore: daemon.fdStore.rawValue
        case .fdStoreMinAge: ConfigDuration.text(daemon.fdStoreMinAge)
        // What auto comes to on this machine, as a comment: the file still says auto.
        case .workers: daemon.workers == .auto ? "auto  # \(daemon.workers.resolve()) here" : daemon.workers.text
        }
    }
}

extension ConnectionKey {
    func text(in settings: ConnectionSettings) -> String {
        switch self {
        case .keepalive: yesNo(settings.keepalive)
        case .keepaliveIdle: ConfigDuration.text(milliseconds: Int64(settings.keepaliveIdle) * 1000)
        case .keepaliveInterval: ConfigDuration.text(milliseconds: Int64(settings.keepaliveInterval) * 1000)
        case .keepaliveCount: "\(settings.keepaliveCount)"
        case .userTimeout:
            switch settings.userTimeout {
            // The value it comes to, as a comment: the file still says auto.
            case .auto: "auto  # \(ConfigDuration.text(milliseconds: Int64(settings.userTimeoutMilliseconds)))"
            case .off: "0"
            case .after(let duration): ConfigDuration.text(duration)
            }
        case .idleTimeout: ConfigDuration.text(settings.idleTimeout)
        case .halfCloseTimeout: ConfigDuration.text(settings.halfCloseTimeout)
        case .connectTimeout: ConfigDuration.text(settings.connectTimeout)
        case .upstreamKeepalive: yesNo(settings.upstreamKeepalive)
        case .maxConnections: "\(settings.maxConnections)"
        case .backlog: "\(settings.backlog)"
        case .reusePort: yesNo(settings.reusePort)
        case .upstreamProxyProtocol: settings.upstreamProxyProtocol.rawValue
        case .acceptProxyProtocol: yesNo(settings.acceptProxyProtocol)
        case .proxyHeaderTimeout: ConfigDuration.text(settings.proxyHeaderTimeout)
        case .resolveInterval: ConfigDuration.text(settings.resolveInterval)
        }
    }

    private func yesNo(_ value: Bool) -> String {
        value ? "yes" : "no"
    }
}
