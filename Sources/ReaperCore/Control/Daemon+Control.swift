extension Daemon {
    /// Answers one control request (SPEC §2).
    func answer(_ request: ControlRequest) -> [UInt8] {
        switch request {
        case .status(let json):
            return ControlResponse.ok(json ? statusJSON() : statusText())
        case .connections(let name, let json):
            if let name, listeners[name] == nil { return ControlResponse.error("no listener named '\(name)'") }
            let rows = table.all.filter { name == nil || $0.listener.name == name }.sorted { $0.id < $1.id }
            // The sweep reads an idle socket only about once per keepalive_idle;
            // an operator looking gets the round-trip time as of now.
            for connection in rows {
                if let fd = connection.clientDescriptor, let info = try? TCPInfo.read(fd) {
                    connection.watch.rttMicroseconds = info.rttMicroseconds
                }
            }
            return ControlResponse.ok(json ? connectionsJSON(rows) : connectionsTable(rows))
        case .reap(let id):
            guard let connection = table.find(id: id), connection.phase != .ended else {
                return ControlResponse.error("no connection with id \(id)")
            }
            connection.reap(.admin)
            return ControlResponse.ok("reaped connection \(id)\n")
        case .reload:
            switch reload(trigger: "reaperctl") {
            case .applied: return ControlResponse.ok("configuration reloaded from \(configSourceDescription)\n")
            case .refused(let why): return ControlResponse.error("reload refused, configuration unchanged:\n\(why)")
            }
        }
    }

    var orderedListeners: [ListenerState] { listenerOrder.compactMap { listeners[$0] } }

    func healthCounts() -> HealthCounts {
        var counts = HealthCounts()
        for connection in table.all { counts[connection.health] += 1 }
        return counts
    }

    private func statusText() -> String {
        let now = Instant.now()
        var text = "reaperd: \(statusLine())\n"
        text += "configuration: \(configSourceDescription)\n"
        text += "uptime: \(now.since(startedAt).components.seconds)s\n"
        text += "last sweep: \(sweepStats.lastSockets) sockets in \(Int(sweepStats.lastSeconds * 1_000_000))us\n"
        for listener in orderedListeners {
            let settings = listener.settings
            let addresses = endpoints.filter { $0.listener === listener }.map(\.address).joined(separator: ", ")
            let target = settings.mode == .echo ? "echo" : "relay to \(settings.upstream.map { "\($0)" } ?? "-")"
            text += "\nlistener \(listener.name)\(listener.configured ? "" : " (removed)"): \(target)\n"
            text += "  listening on: \(addresses.isEmpty ? "-" : addresses)\n"
            let c = listener.counters
            text += "  open \(listener.open), accepted \(c.accepted), closed \(c.closed), reaped \(c.reapedTotal)"
            text += ", refused \(c.refusedLimit) (limit) \(c.refusedUpstream) (upstream)\n"
            if c.reapedTotal > 0 {
                let reasons = ReapReason.allCases.compactMap { reason in
                    c.reaped[reason].map { "\(reason.rawValue) \($0)" }
                }
                text += "  reaped by reason: \(reasons.joined(separator: ", "))\n"
            }
            let k = settings.connection
            text +=
                "  keepalive: \(k.keepalive ? "\(k.keepaliveIdle)s/\(k.keepaliveInterval)s/\(k.keepaliveCount)" : "off")"
            text += ", user timeout \(k.userTimeoutMilliseconds)ms\n"
        }
        return text
    }

    /// Bytes per listener including connections still open.
    func liveBytes(_ listener: ListenerState) -> (in: UInt64, out: UInt64) {
        var bytesIn = listener.counters.bytesIn
        var bytesOut = listener.counters.bytesOut
        for connection in table.all where connection.listener === listener {
            bytesIn &+= connection.bytesIn
            bytesOut &+= connection.bytesOut
        }
        return (bytesIn, bytesOut)
    }

    private func statusJSON() -> String {
        let counts = healthCounts()
        var json = JSONWriter()
        json.beginObject()
        json.field("pid", Int(Files.processID))
        json.field("configuration", configSourceDescription)
        json.field("uptime_seconds", Instant.now().since(startedAt).secondsAsDouble)
        json.field("connections", table.count)
        json.beginObject("health")
        for health in Health.allCases { json.field(health.rawValue, counts[health]) }
        json.endObject()
        json.field("reaped_since_start", reapsSinceStart)
        json.field("status", statusLine())
        if let lastReloadError { json.field("last_reload_error", lastReloadError) }
        json.beginObject("sweep")
        json.field("count", sweepStats.count)
        json.field("last_seconds", sweepStats.lastSeconds)
        json.field("last_sockets", sweepStats.lastSockets)
        json.field("sum_seconds", sweepStats.sum)
        json.endObject()
        json.beginArray("listeners")
        for listener in orderedListeners {
            let c = listener.counters
            let bytes = liveBytes(listener)
            json.beginObject()
            json.field("name", listener.name)
            json.field("configured", listener.configured)
            json.field("mode", listener.settings.mode.rawValue)
            json.field("upstream", listener.settings.upstream.map { "\($0)" } ?? "")
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
            json.endObject()
            json.beginObject("reaped")
            for reason in ReapReason.allCases { json.field(reason.rawValue, c.reaped[reason] ?? 0) }
            json.endObject()
            json.beginObject("bytes")
            json.field("in", bytes.in)
            json.field("out", bytes.out)
            json.endObject()
            json.endObject()
        }
        json.endArray()
        json.endObject()
        return json.text + "\n"
    }

    private func connectionsJSON(_ rows: [Connection]) -> String {
        let now = Instant.now()
        var json = JSONWriter()
        json.beginArray()
        for connection in rows {
            json.beginObject()
            json.field("id", connection.id)
            json.field("listener", connection.listener.name)
            json.field("peer", "\(connection.peer)")
            json.field("upstream", connection.upstreamAddress.map { "\($0)" } ?? "echo")
            json.field("age_seconds", now.since(connection.startedAt).secondsAsDouble)
            json.field("idle_seconds", now.since(connection.lastActivity).secondsAsDouble)
            json.field("health", connection.phase == .connecting ? "connecting" : connection.health.rawValue)
            json.field("probes", Int(connection.probes))
            json.field("rtt_us", Int(connection.rttMicroseconds))
            json.field("bytes_in", connection.bytesIn)
            json.field("bytes_out", connection.bytesOut)
            json.endObject()
        }
        json.endArray()
        return json.text + "\n"
    }

    private func connectionsTable(_ rows: [Connection]) -> String {
        let now = Instant.now()
        var table: [[String]] = [
            ["ID", "LISTENER", "PEER", "UPSTREAM", "AGE", "IDLE", "HEALTH", "PROBES", "RTT", "IN", "OUT"]
        ]
        for connection in rows {
            table.append([
                "\(connection.id)", connection.listener.name, "\(connection.peer)",
                connection.upstreamAddress.map { "\($0)" } ?? "echo",
                "\(now.since(connection.startedAt).components.seconds)s",
                "\(now.since(connection.lastActivity).components.seconds)s",
                connection.phase == .connecting ? "connecting" : connection.health.rawValue,
                "\(connection.probes)", String(format3: Double(connection.rttMicroseconds) / 1000) + "ms",
                "\(connection.bytesIn)", "\(connection.bytesOut)",
            ])
        }
        return TextTable.render(table)
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
