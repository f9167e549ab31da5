extension Daemon {
    /// Answers one control request (SPEC §2).
    func answer(_ request: ControlRequest) -> [UInt8] {
        switch request {
        case .status(let json):
            return ControlResponse.ok(json ? statusJSON() : statusText())
        case .connections(let name, let json):
            if let name, listeners[name] == nil && services[name] == nil {
                return ControlResponse.error("no listener or service named '\(name)'")
            }
            var rows = connectionRows(listener: name)
            switch askWorkers({ $0.connectionRows(listener: name) }) {
            case .success(let theirs): rows += theirs.joined()
            case .failure(let stalled): return ControlResponse.error(stalled.message)
            }
            for service in orderedServices where name == nil || service.settings.name == name {
                rows += service.connections.values.map { ConnectionRow($0, service: service.settings.name) }
            }
            rows.sort { $0.id < $1.id }
            return ControlResponse.ok(json ? connectionsJSON(rows) : connectionsTable(rows))
        case .reap(let id):
            switch askWorkers({ $0.reapConnection(id: id) }) {
            case .success(let theirs) where reapConnection(id: id) || theirs.contains(true):
                return ControlResponse.ok("reaped connection \(id)\n")
            case .success: break
            case .failure(let stalled): return ControlResponse.error(stalled.message)
            }
            switch reapAdopted(id: id) {
            case true?: return ControlResponse.ok("reaped adopted connection \(id)\n")
            case false?: return ControlResponse.error("adopted connection \(id) could not be destroyed")
            case nil: return ControlResponse.error("no connection with id \(id)")
            }
        case .reload:
            switch reload(trigger: "reaperctl") {
            case .applied: return ControlResponse.ok("configuration reloaded from \(configSourceDescription)\n")
            case .refused(let why): return ControlResponse.error("reload refused, configuration unchanged:\n\(why)")
            }
        }
    }

    /// This worker's relayed connections, on `listener` or all of them.
    func connectionRows(listener name: String?) -> [ConnectionRow] {
        let relayed = table.all.filter { name == nil || $0.listener.name == name }
        // The sweep reads an idle socket only about once per keepalive_idle;
        // an operator looking gets the round-trip time as of now.
        for connection in relayed {
            if let fd = connection.clientDescriptor, let info = try? TCPInfo.read(fd) {
                connection.watch.rttMicroseconds = info.rttMicroseconds
            }
        }
        return relayed.map(ConnectionRow.init)
    }

    /// Reaps connection `id` if this worker has it (reason `admin`).
    func reapConnection(id: UInt64) -> Bool {
        guard let connection = table.find(id: id), connection.phase != .ended else { return false }
        connection.reap(.admin)
        return true
    }

    var orderedListeners: [ListenerState] { listenerOrder.compactMap { listeners[$0] } }

    /// Listeners, then adopted services: the metrics label both by name.
    var countedListeners: [ListenerState] { orderedListeners + orderedServices.map(\.state) }

    /// This worker's relayed connections by health.
    func localHealthCounts() -> HealthCounts {
        var counts = HealthCounts()
        for connection in table.all { counts[connection.health] += 1 }
        return counts
    }

    /// Adopted connections by health (the primary's alone).
    func serviceHealthCounts() -> HealthCounts {
        var counts = HealthCounts()
        for service in orderedServices {
            for connection in service.connections.values { counts[connection.health] += 1 }
        }
        return counts
    }

    private func statusText() -> String {
        let now = Instant.now()
        let report = gatherReport()
        var text = "reaperd: \(statusLine(report))\n"
        text += "configuration: \(configSourceDescription)\n"
        text += "uptime: \(now.since(startedAt).components.seconds)s\n"
        text += "workers: \(workerCount)\(report.unansweredText)\n"
        text += "last sweep: \(report.sweep.lastSockets) sockets in \(Int(report.sweep.lastSeconds * 1_000_000))us\n"
        for listener in orderedListeners {
            let settings = listener.settings
            let addresses = endpoints.filter { $0.listener === listener }.map(\.address).joined(separator: ", ")
            let target = settings.mode == .echo ? "echo" : "relay to \(settings.upstream.map { "\($0)" } ?? "-")"
            text += "\nlistener \(listener.name)\(listener.configured ? "" : " (removed)"): \(target)\n"
            text += "  listening on: \(addresses.isEmpty ? "-" : addresses)\n"
            if let resolution = listener.resolution {
                text += resolutionText(resolution, now: now)
                text += "  failed lookups: \(report.counters(of: listener).resolveFailures)\n"
            }
            let c = report.counters(of: listener)
            text += "  open \(listener.open), accepted \(c.accepted), closed \(c.closed), reaped \(c.reapedTotal)"
            text += ", refused \(c.refusedLimit) (limit) \(c.refusedUpstream) (upstream)"
            if settings.connection.acceptProxyProtocol || c.refusedProxyHeader > 0 {
                text += " \(c.refusedProxyHeader) (proxy header)"
            }
            text += "\n"
            if c.reapedTotal > 0 {
                let reasons = ReapReason.allCases.compactMap { reason in
                    c.reaped[reason].map { "\(reason.rawValue) \($0)" }
                }
                text += "  reaped by reason: \(reasons.joined(separator: ", "))\n"
            }
            let k = settings.connection
            text +=
                "  keepalive: \(k.keepalive ? "\(k.keepaliveIdle)s/\(k.keepaliveInterval)s/\(k.keepaliveCount)" : "off")"
            text += ", user timeout \(ConfigDuration.text(milliseconds: Int64(k.userTimeoutMilliseconds)))\n"
        }
        for service in orderedServices {
            let location = service.cgroupPath.map { "cgroup \($0)" } ?? "not running (no cgroup yet)"
            text += "\nservice \(service.settings.name): adopting \(service.settings.target), \(location)\n"
            if let problem = service.reported { text += "  problem: \(problem)\n" }
            let c = service.state.counters
            text +=
                "  open \(service.connections.count), seen \(c.accepted), closed \(c.closed), reaped \(c.reapedTotal)\n"
            let k = service.settings.connection
            text +=
                "  keepalive: \(k.keepalive ? "\(k.keepaliveIdle)s/\(k.keepaliveInterval)s/\(k.keepaliveCount)" : "off")"
            text += ", user timeout \(ConfigDuration.text(milliseconds: Int64(k.userTimeoutMilliseconds)))"
            text +=
                service.settings.ports.isEmpty
                ? ", every port\n" : ", ports \(service.settings.ports.map(String.init).joined(separator: ", "))\n"
        }
        return text
    }

    /// A named upstream's lines in `reaperctl status`: what it resolves to,
    /// and how its lookups are going.
    private func resolutionText(_ resolution: UpstreamResolution, now: Instant) -> String {
        let addresses = resolution.addresses.map(\.description).joined(separator: ", ")
        var text: String
        if let resolvedAt = resolution.resolvedAt {
            text = "  resolved: \(addresses) (looked up \(now.since(resolvedAt).components.seconds)s ago)\n"
        } else {
            text = "  resolved: not yet; clients are refused until it resolves\n"
        }
        if let since = resolution.failingSince {
            text += "  lookups failing for \(now.since(since).components.seconds)s: \(resolution.lastError ?? "")"
            text += resolution.addresses.isEmpty ? "\n" : "; keeping the last good addresses\n"
        }
        return text
    }

    private func statusJSON() -> String {
        let report = gatherReport()
        var counts = serviceHealthCounts()
        counts.add(report.health)
        var json = JSONWriter()
        json.beginObject()
        json.field("pid", Int(Files.processID))
        json.field("configuration", configSourceDescription)
        json.field("uptime_seconds", Instant.now().since(startedAt).secondsAsDouble)
        json.field("connections", report.connections)
        json.field("workers", workerCount)
        if !report.unanswered.isEmpty {
            json.beginArray("workers_unanswered")
            for index in report.unanswered { json.element("\(index)") }
            json.endArray()
        }
        json.beginObject("health")
        for health in Health.allCases { json.field(health.rawValue, counts[health]) }
        json.endObject()
        json.field("reaped_since_start", report.reaps)
        json.field("status", statusLine(report))
        if let lastReloadError { json.field("last_reload_error", lastReloadError) }
        json.beginObject("sweep")
        json.field("count", report.sweep.count)
        json.field("last_seconds", report.sweep.lastSeconds)
        json.field("last_sockets", report.sweep.lastSockets)
        json.field("looks", report.sweep.looks)
        json.field("sum_seconds", report.sweep.sum)
        json.endObject()
        json.beginArray("listeners")
        for listener in orderedListeners {
            let c = report.counters(of: listener)
            json.beginObject()
            json.field("name", listener.name)
            json.field("configured", listener.configured)
            json.field("mode", listener.settings.mode.rawValue)
            json.field("upstream", listener.settings.upstream.map { "\($0)" } ?? "")
            // Where new connections go now: the address, or a name's last good answer.
            json.beginArray("upstream_addresses")
            for address in listener.route?.addresses ?? [] { json.element("\(address)") }
            json.endArray()
            if let resolution = listener.resolution {
                json.beginObject("resolve")
                json.field("name", resolution.name)
                json.field("resolved", resolution.resolvedAt != nil)
                if let resolvedAt = resolution.resolvedAt {
                    json.field("resolved_seconds_ago", Instant.now().since(resolvedAt).secondsAsDouble)
                }
                json.field("failing", resolution.failingSince != nil)
                json.field("failures", c.resolveFailures)
                json.field("last_error", resolution.lastError ?? "")
                json.endObject()
            }
            json.beginArray("addresses")
            for endpoint in endpoints where endpoint.listener === listener {
                json.beginObject()
                json.field("address", endpoint.address)
                json.field("activated", endpoint.activated)
                json.endObject()
            }
            json.endArray()
            json.field("open", listener.open)
            json.field("accepted", c.accepted)
            json.field("closed", c.closed)
            json.beginObject("refused")
            json.field("limit", c.refusedLimit)
            json.field("upstream", c.refusedUpstream)
            json.field("proxy_header", c.refusedProxyHeader)
            json.endObject()
            json.beginObject("reaped")
            for reason in ReapReason.allCases { json.field(reason.rawValue, c.reaped[reason] ?? 0) }
            json.endObject()
            json.beginObject("bytes")
            json.field("in", c.bytesIn)
            json.field("out", c.bytesOut)
            json.endObject()
            json.endObject()
        }
        json.endArray()
        json.beginArray("services")
        for service in orderedServices {
            let c = service.state.counters
            json.beginObject()
            json.field("name", service.settings.name)
            json.field("target", "\(service.settings.target)")
            json.field("cgroup", service.cgroupPath ?? "")
            json.field("attached", service.isAttached)
            json.field("problem", service.reported ?? "")
            json.field("open", service.connections.count)
            json.field("seen", c.accepted)
            json.field("closed", c.closed)
            json.beginObject("reaped")
            for reason in ReapReason.allCases { json.field(reason.rawValue, c.reaped[reason] ?? 0) }
            json.endObject()
            json.endObject()
        }
        json.endArray()
        json.endObject()
        return json.text + "\n"
    }

    private func connectionsJSON(_ rows: [ConnectionRow]) -> String {
        var json = JSONWriter()
        json.beginArray()
        for row in rows {
            json.beginObject()
            json.field("id", row.id)
            json.field("listener", row.listener)
            json.field("peer", row.peer)
            json.field("upstream", row.upstream)
            json.field("upstream_name", row.upstreamName)
            json.field("upstream_local", row.upstreamLocal)
            json.field("via", row.via)
            json.field("age_seconds", row.age.secondsAsDouble)
            json.field("idle_seconds", row.idle.secondsAsDouble)
            json.field("health", row.health)
            json.field("probes", Int(row.probes))
            json.field("rtt_us", Int(row.rttMicroseconds))
            json.field("bytes_in", row.bytesIn)
            json.field("bytes_out", row.bytesOut)
            json.field("adopted", row.adopted)
            json.endObject()
        }
        json.endArray()
        return json.text + "\n"
    }

    private func connectionsTable(_ rows: [ConnectionRow]) -> String {
        var table: [[String]] = [
            ["ID", "LISTENER", "PEER", "UPSTREAM", "AGE", "IDLE", "HEALTH", "PROBES", "RTT", "IN", "OUT"]
        ]
        for row in rows {
            table.append([
                "\(row.id)", row.listener, row.peer,
                row.upstreamName.isEmpty ? row.upstream : "\(row.upstreamName) (\(row.upstream))",
                "\(row.age.components.seconds)s",
                "\(row.idle.components.seconds)s", row.health, "\(row.probes)",
                String(format3: Double(row.rttMicroseconds) / 1000) + "ms", "\(row.bytesIn)", "\(row.bytesOut)",
            ])
        }
        return TextTable.render(table)
    }
}

/// One line of `reaperctl connections`: a relayed connection, or an adopted
/// one (its UPSTREAM is the service's own address, marked `adopted`).
struct ConnectionRow {
    let id: UInt64
    let listener: String
    let peer: String
    /// The address connected to (while connecting, the one being tried).
    let upstream: String
    /// The upstream as configured when it is a host name; "" otherwise.
    let upstreamName: String
    /// The upstream socket's own address: the client the service sees ("" for echo).
    let upstreamLocal: String
    /// The load balancer a PROXY header came through; empty otherwise.
    let via: String
    let age: Duration
    let idle: Duration
    let health: String
    let probes: UInt8
    let rttMicroseconds: UInt32
    let bytesIn: UInt64
    let bytesOut: UInt64
    let adopted: Bool

    init(_ connection: Connection) {
        let now = Instant.now()
        id = connection.id
        listener = connection.listener.name
        peer = "\(connection.peer)"
        upstream = connection.upstreamAddress.map { "\($0)" } ?? "echo"
        upstreamName = connection.upstreamName ?? ""
        upstreamLocal = connection.upstreamLocal.map { "\($0)" } ?? ""
        via = connection.proxiedVia.map { "\($0)" } ?? ""
        age = now.since(connection.startedAt)
        idle = now.since(connection.lastActivity)
        health =
            switch connection.phase {
            case .awaitingHeader: "awaiting-header"
            case .connecting: "connecting"
            case .relaying, .ended: connection.health.rawValue
            }
        probes = connection.probes
        rttMicroseconds = connection.rttMicroseconds
        bytesIn = connection.bytesIn
        bytesOut = connection.bytesOut
        adopted = false
    }

    init(_ connection: AdoptedConnection, service: String) {
        let now = Instant.now()
        id = connection.id
        listener = service
        peer = connection.peer.map { "\($0)" } ?? "?"
        upstream = (connection.local.map { "\($0)" } ?? "?") + " (adopted)"
        upstreamName = ""
        // Adopted: the service sees the client itself.
        upstreamLocal = ""
        via = ""
        age = now.since(connection.firstSeen)
        idle = now.since(connection.lastActivity)
        health = connection.health.rawValue
        probes = connection.probesLastSeen
        rttMicroseconds = connection.info?.rttMicroseconds ?? 0
        bytesIn = connection.bytesIn
        bytesOut = connection.bytesOut
        adopted = true
    }
}

/// Left-aligned columns separated by two spaces.
enum TextTable {
    static func render(_ rows: [[String]]) -> String {
        guard let first = rows.first else { return "" }
        var widths = [Int](repeating: 0, count: first.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.count)
            }
        }
        var text = ""
        for row in rows {
            var line = ""
            for (index, cell) in row.enumerated() {
                line += cell
                if index < row.count - 1 { line += String(repeating: " ", count: widths[index] - cell.count + 2) }
            }
            text += line + "\n"
        }
        return text
    }
}

extension String {
    /// A number with up to three decimals, without Foundation.
    init(format3 value: Double) {
        let scaled = Int((value * 1000).rounded())
        let whole = scaled / 1000
        let fraction = scaled % 1000
        let digits = String(fraction)
        self = "\(whole)." + String(repeating: "0", count: 3 - digits.count) + digits
    }
}
