/// Turns grouped sections into a `Configuration`: interprets every value, applies
/// `[defaults]` to each listener, and checks the rules between keys and sections.
/// It never stops at the first problem; everything lands in `diagnostics`.
struct ConfigBuilder {
    var diagnostics: ConfigDiagnostics
    /// Which listener binds each address so far, to refuse the same address twice.
    private var listenOwners: [Endpoint: (name: String, line: Int)] = [:]

    init(diagnostics: ConfigDiagnostics) {
        self.diagnostics = diagnostics
    }

    mutating func build(_ sections: [ConfigSection], source: ConfigSource) -> Configuration {
        var daemon = DaemonSettings.defaults
        var defaults = ConnectionSettings.defaults
        // [daemon] and [defaults] first, wherever they are: listeners inherit the whole file.
        for section in sections {
            switch section.kind {
            case .daemon:
                var settings = DaemonSettings.defaults
                applyDaemon(section, to: &settings)
                if !section.isDiscarded { daemon = settings }
            case .defaults:
                var settings = ConnectionSettings.defaults
                applyDefaults(section, to: &settings)
                if !section.isDiscarded { defaults = settings }
            case .listener, .service:
                break
            }
        }
        var listeners: [ListenerSettings] = []
        var sawListenerSection = false
        for section in sections {
            guard case .listener(let name) = section.kind else { continue }
            sawListenerSection = true
            let listener = buildListener(name: name, section: section, inheriting: defaults)
            if !section.isDiscarded { listeners.append(listener) }
        }
        checkOverlaps(listeners)
        checkLoops(listeners)
        var services: [ServiceSettings] = []
        for section in sections {
            guard case .service(let name) = section.kind else { continue }
            if let listener = listeners.first(where: { $0.name == name }) {
                diagnostics.add(
                    section.line,
                    "[service:\(name)]: the name is taken by [listener:\(name)] (line \(listener.line)); "
                        + "journal entries and metrics would not tell them apart")
            }
            let service = buildService(name: name, section: section, inheriting: defaults)
            if !section.isDiscarded, let service { services.append(service) }
        }
        if !sawListenerSection && !sections.contains(where: { if case .service = $0.kind { true } else { false } }) {
            diagnostics.add(
                nil, "no [listener:NAME] or [service:NAME] section; at least one listener or service is required")
        }
        return Configuration(
            source: source, daemon: daemon, defaults: defaults, listeners: listeners, services: services)
    }

    private mutating func applyDaemon(_ section: ConfigSection, to daemon: inout DaemonSettings) {
        for entry in section.entries {
            guard let key = DaemonKey(rawValue: entry.key) else {
                diagnostics.add(entry.line, ConfigKeySuggestion.unknownKeyMessage(entry.key, section: section.kind))
                continue
            }
            check(entry) { value throws(ConfigValueError) in try key.apply(value, to: &daemon) }
        }
    }

    private mutating func applyDefaults(_ section: ConfigSection, to defaults: inout ConnectionSettings) {
        for entry in section.entries {
            guard let key = ConnectionKey(rawValue: entry.key) else {
                diagnostics.add(entry.line, ConfigKeySuggestion.unknownKeyMessage(entry.key, section: section.kind))
                continue
            }
            check(entry) { value throws(ConfigValueError) in try key.apply(value, to: &defaults) }
        }
    }

    private mutating func buildListener(
        name: String, section: ConfigSection, inheriting defaults: ConnectionSettings
    ) -> ListenerSettings {
        var listener = ListenerSettings(name: name, line: section.line, connection: defaults)
        var upstreamEntry: ConfigEntry?
        var proxyEntry: ConfigEntry?
        var modeIsValid = true
        for entry in section.entries {
            switch (ListenerKey(rawValue: entry.key), ConnectionKey(rawValue: entry.key)) {
            case (.listen?, _):
                listener.listen = listenAddresses(entry)
                if !section.isDiscarded { claim(listener.listen, for: name, line: entry.line) }
            case (.mode?, _):
                modeIsValid = check(entry) { value throws(ConfigValueError) in
                    listener.mode = try ConfigValues.choice(value, of: ListenerMode.self)
                }
            case (.upstream?, _):
                upstreamEntry = entry
                check(entry) { value throws(ConfigValueError) in
                    listener.upstream = try ConfigValues.upstream(value)
                }
            case (nil, let key?):
                if key == .upstreamProxyProtocol { proxyEntry = entry }
                check(entry) { value throws(ConfigValueError) in try key.apply(value, to: &listener.connection) }
            case (nil, nil):
                diagnostics.add(entry.line, ConfigKeySuggestion.unknownKeyMessage(entry.key, section: section.kind))
            }
        }
        // A discarded section already has its error; "needs upstream" on it would be noise.
        switch listener.mode {
        case .relay where upstreamEntry == nil && modeIsValid && !section.isDiscarded:
            diagnostics.add(section.line, "listener \(name): mode = relay needs upstream = HOST:PORT (or unix:/PATH)")
        case .echo:
            if let upstreamEntry {
                diagnostics.add(
                    upstreamEntry.line, "upstream: not allowed with mode = echo; an echo listener has no upstream")
                listener.upstream = nil
            }
            // Inherited from [defaults] it means nothing here; written here it is a mistake.
            if let proxyEntry, proxyEntry.value != ProxyProtocolVersion.off.rawValue {
                diagnostics.add(
                    proxyEntry.line,
                    "upstream_proxy_protocol: not allowed with mode = echo; an echo listener has no upstream")
            }
        case .relay:
            break
        }
        return listener
    }

    /// A wildcard address and a specific one on the same port cannot both be
    /// bound (EADDRINUSE at start, not here) unless both listeners set
    /// `reuse_port`. IPv6 wildcards are IPV6_V6ONLY, so they overlap IPv6 only.
    private mutating func checkOverlaps(_ listeners: [ListenerSettings]) {
        var bound: [(endpoint: Endpoint, listener: ListenerSettings)] = []
        for listener in listeners {
            for endpoint in listener.listen where endpoint.port != 0 {
                for other in bound
                where Self.overlap(endpoint, other.endpoint)
                    && !(listener.connection.reusePort && other.listener.connection.reusePort)
                {
                    diagnostics.add(
                        listener.line,
                        "listener \(listener.name): listen = \(endpoint) overlaps \(other.endpoint) of listener "
                            + "\(other.listener.name) (line \(other.listener.line)): the second bind would fail with "
                            + "EADDRINUSE (set reuse_port = yes on both, or listen on one)")
                }
                bound.append((endpoint, listener))
            }
        }
    }

    private static func overlap(_ a: Endpoint, _ b: Endpoint) -> Bool {
        switch (a, b) {
        case (.ipv4(let x, let p), .ipv4(let y, let q)):
            return p == q && x != y && (x == "0.0.0.0" || y == "0.0.0.0")
        case (.ipv6(let x, let p), .ipv6(let y, let q)):
            return p == q && x != y && (x == "::" || y == "::")
        default:
            return false
        }
    }

    /// A relay whose upstream is its own listen address connects to itself,
    /// and each connection opens another until max_connections.
    private mutating func checkLoops(_ listeners: [ListenerSettings]) {
        for listener in listeners {
            guard listener.mode == .relay, let upstream = listener.upstream?.endpoint else { continue }
            for endpoint in listener.listen where Self.reaches(upstream, endpoint) {
                diagnostics.add(
                    listener.line,
                    "listener \(listener.name): upstream = \(upstream) is this listener's own address "
                        + "(listen = \(endpoint)): every client would loop back into reaperd until max_connections")
            }
        }
    }

    /// Whether connecting to `upstream` reaches a socket listening on `endpoint`.
    private static func reaches(_ upstream: Endpoint, _ endpoint: Endpoint) -> Bool {
        switch (upstream, endpoint) {
        case (.ipv4(let to, let p), .ipv4(let on, let q)):
            // A wildcard listener is reached through loopback too; 0.0.0.0 means this host.
            return p == q && (to == on || to == "0.0.0.0" || (on == "0.0.0.0" && to.hasPrefix("127.")))
        case (.ipv6(let to, let p), .ipv6(let on, let q)):
            return p == q && (to == on || to == "::" || (on == "::" && to == "::1"))
        default:
            return false
        }
    }

    /// A `[service:NAME]` section: `unit =` or `cgroup =`, optional `ports =`,
    /// and the connection keys that mean something beside a service.
    private mutating func buildService(
        name: String, section: ConfigSection, inheriting defaults: ConnectionSettings
    ) -> ServiceSettings? {
        var connection = defaults
        var target: ServiceSettings.Target?
        var targetLine: Int?
        var ports: [UInt16] = []
        for entry in section.entries {
            switch (ServiceKey(rawValue: entry.key), ConnectionKey(rawValue: entry.key)) {
            case (.unit?, _), (.cgroup?, _):
                if let targetLine {
                    diagnostics.add(
                        entry.line,
                        "\(entry.key): give unit = or cgroup =, not both (the other is at line \(targetLine))")
                    continue
                }
                targetLine = entry.line
                check(entry) { value throws(ConfigValueError) in
                    if entry.key == ServiceKey.unit.rawValue {
                        guard ServiceSettings.isValidUnit(value) else {
                            throw ConfigValueError("\(value) is not a unit name; expected NAME.service or NAME.scope")
                        }
                        target = .unit(value)
                    } else {
                        guard value.hasPrefix("/"), !value.split(separator: "/").contains(".."),
                            !value.contains("\0")
                        else {
                            throw ConfigValueError(
                                "\(value) is not a cgroup path; expected /PATH below the cgroup v2 mount, "
                                    + "e.g. /system.slice/redis-server.service")
                        }
                        target = .cgroup(value)
                    }
                }
            case (.ports?, _):
                check(entry) { value throws(ConfigValueError) in ports = try Self.ports(value) }
            case (nil, let key?) where ConnectionKey.adoptable.contains(key):
                check(entry) { value throws(ConfigValueError) in try key.apply(value, to: &connection) }
            case (nil, _):
                diagnostics.add(entry.line, ConfigKeySuggestion.unknownKeyMessage(entry.key, section: section.kind))
            }
        }
        guard let target else {
            if targetLine == nil && !section.isDiscarded {
                diagnostics.add(
                    section.line,
                    "service \(name): needs unit = NAME.service or cgroup = /PATH to know whose connections")
            }
            return nil
        }
        return ServiceSettings(name: name, line: section.line, target: target, ports: ports, connection: connection)
    }

    /// `ports = 5432, 6432`: local ports, 1 ... 65535, none twice.
    private static func ports(_ text: String) throws(ConfigValueError) -> [UInt16] {
        var ports: [UInt16] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let word = String(item.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
            guard let port = UInt16(word), port > 0 else {
                throw ConfigValueError("\(word.isEmpty ? "an empty entry" : word) is not a port (1 to 65535)")
            }
            guard !ports.contains(port) else { throw ConfigValueError("port \(port) is listed twice") }
            ports.append(port)
        }
        guard ports.count <= ServiceSettings.maxPorts else {
            throw ConfigValueError("at most \(ServiceSettings.maxPorts) ports; give none to cover every connection")
        }
        return ports
    }

    /// Parses `listen = A, B, ...`: every entry a TCP address, none twice.
    private mutating func listenAddresses(_ entry: ConfigEntry) -> [Endpoint] {
        guard !entry.value.isEmpty else {
            diagnostics.add(entry.line, "listen: missing value")
            return []
        }
        var addresses: [Endpoint] = []
        for item in entry.value.split(separator: ",", omittingEmptySubsequences: false) {
            let text = String(item.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
            guard !text.isEmpty else {
                diagnostics.add(entry.line, "listen: empty address in the list")
                continue
            }
            switch Endpoint.parse(text) {
            case .failure(let error):
                diagnostics.add(entry.line, "listen: \(error.message)")
            case .success(let endpoint) where endpoint.isUnix:
                diagnostics.add(entry.line, "listen: \(text): listening on a unix socket is not supported")
            case .success(let endpoint) where addresses.contains(endpoint):
                diagnostics.add(entry.line, "listen: \(endpoint) is listed twice")
            case .success(let endpoint):
                addresses.append(endpoint)
            }
        }
        return addresses
    }

    /// Records that `name` binds `addresses`; reports one already bound by another listener.
    /// Port 0 asks the kernel for a fresh port, so it never conflicts.
    private mutating func claim(_ addresses: [Endpoint], for name: String, line: Int) {
        for address in addresses where address.port != 0 {
            if let owner = listenOwners[address] {
                diagnostics.add(
                    line, "listen: \(address) is already used by listener \(owner.name) (line \(owner.line))")
            } else {
                listenOwners[address] = (name, line)
            }
        }
    }

    /// Runs `body` on the entry's value, turning a refusal into `KEY: message` at its line.
    /// Returns whether the value was accepted.
    @discardableResult
    private mutating func check(
        _ entry: ConfigEntry, _ body: (String) throws(ConfigValueError) -> Void
    ) -> Bool {
        guard !entry.value.isEmpty else {
            diagnostics.add(entry.line, "\(entry.key): missing value")
            return false
        }
        do {
            try body(entry.value)
            return true
        } catch {
            diagnostics.add(entry.line, "\(entry.key): \(error.message)")
            return false
        }
    }
}
