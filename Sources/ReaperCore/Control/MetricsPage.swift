extension Daemon {
    /// SPEC §6 in the Prometheus text exposition format, version 0.0.4.
    func metricsPage() -> String {
        var page = PrometheusText()
        // Every worker's counters and connections (a stalled worker's are
        // missing, and reaperd_workers_unanswered says so).
        let report = gatherReport()
        var byHealth: [String: HealthCounts] = [:]
        for (name, entry) in report.listeners { byHealth[name] = entry.health }
        for service in orderedServices {
            for connection in service.connections.values {
                byHealth[service.settings.name, default: HealthCounts()][connection.health] += 1
            }
        }
        let all = countedListeners

        page.family("reaperd_connections", "gauge", "Connections open now, by listener and health.")
        for listener in all {
            for health in Health.allCases {
                page.sample(
                    "reaperd_connections", [("listener", listener.name), ("health", health.rawValue)],
                    Double(byHealth[listener.name]?[health] ?? 0))
            }
        }
        page.family("reaperd_max_connections", "gauge", "A listener's max_connections (refused past it).")
        for listener in orderedListeners {
            page.sample(
                "reaperd_max_connections", [("listener", listener.name)], Double(listener.connection.maxConnections))
        }
        page.family("reaperd_accepted_total", "counter", "Client connections accepted.")
        for listener in all {
            page.sample(
                "reaperd_accepted_total", [("listener", listener.name)], Double(report.counters(of: listener).accepted))
        }
        page.family(
            "reaperd_refused_total", "counter",
            "Clients closed at once: over a limit, the upstream failed, or no valid PROXY header.")
        for listener in all {
            page.sample(
                "reaperd_refused_total", [("listener", listener.name), ("reason", "limit")],
                Double(report.counters(of: listener).refusedLimit))
            page.sample(
                "reaperd_refused_total", [("listener", listener.name), ("reason", "upstream")],
                Double(report.counters(of: listener).refusedUpstream))
            page.sample(
                "reaperd_refused_total", [("listener", listener.name), ("reason", "proxy_header")],
                Double(report.counters(of: listener).refusedProxyHeader))
        }
        // Declared even with no named upstream (no samples then), so rules and
        // dashboards that use them find the families on every page.
        let named = orderedListeners.filter { $0.resolution != nil }
        page.family(
            "reaperd_upstream_resolve_failures_total", "counter",
            "Failed lookups of an upstream given by name (the last good answer stays in use).")
        for listener in named {
            page.sample(
                "reaperd_upstream_resolve_failures_total", [("listener", listener.name)],
                Double(report.counters(of: listener).resolveFailures))
        }
        page.family(
            "reaperd_upstream_addresses", "gauge",
            "Addresses an upstream name resolves to now (0: never resolved, clients refused).")
        for listener in named {
            page.sample(
                "reaperd_upstream_addresses", [("listener", listener.name)],
                Double(listener.route?.addresses.count ?? 0))
        }
        page.family("reaperd_closed_total", "counter", "Connections closed by a peer (FIN or RST): not reaps.")
        for listener in all {
            page.sample(
                "reaperd_closed_total", [("listener", listener.name)], Double(report.counters(of: listener).closed))
        }
        page.family("reaperd_reaped_total", "counter", "Connections reaped by reaperd, by reason.")
        for listener in all {
            for reason in ReapReason.allCases {
                page.sample(
                    "reaperd_reaped_total", [("listener", listener.name), ("reason", reason.rawValue)],
                    Double(report.counters(of: listener).reaped[reason] ?? 0))
            }
        }
        page.family("reaperd_bytes_total", "counter", "Bytes relayed; in = client to upstream.")
        for listener in all {
            let bytes = report.counters(of: listener)
            page.sample(
                "reaperd_bytes_total", [("listener", listener.name), ("direction", "in")], Double(bytes.bytesIn))
            page.sample(
                "reaperd_bytes_total", [("listener", listener.name), ("direction", "out")], Double(bytes.bytesOut))
        }
        page.family("reaperd_sweep_seconds", "histogram", "Time one TCP_INFO sweep takes.")
        var cumulative: UInt64 = 0
        for (index, bound) in SweepStats.bucketBounds.enumerated() {
            cumulative = report.sweep.bucketCounts[index]
            page.sample("reaperd_sweep_seconds_bucket", [("le", "\(bound)")], Double(cumulative))
        }
        page.sample("reaperd_sweep_seconds_bucket", [("le", "+Inf")], Double(report.sweep.count))
        page.sample("reaperd_sweep_seconds_sum", [], report.sweep.sum)
        page.sample("reaperd_sweep_seconds_count", [], Double(report.sweep.count))
        page.family("reaperd_sweep_connections", "gauge", "Sockets examined by the last sweep.")
        page.sample("reaperd_sweep_connections", [], Double(report.sweep.lastSockets))
        page.family(
            "reaperd_sweep_looks_total", "counter",
            "Connections the sweeps looked at: an idle one about once per keepalive_idle.")
        page.sample("reaperd_sweep_looks_total", [], Double(report.sweep.looks))
        page.family("reaperd_workers", "gauge", "Event loops accepting and relaying (workers =).")
        page.sample("reaperd_workers", [], Double(workerCount))
        page.family(
            "reaperd_workers_unanswered", "gauge",
            "Workers that did not answer this scrape within 2 s (stalled); their counters are missing from it.")
        page.sample("reaperd_workers_unanswered", [], Double(report.unanswered.count))
        page.family("reaperd_build_info", "gauge", "Always 1; the version is the label.")
        page.sample(
            "reaperd_build_info", [("version", String(DaemonCommandLine.version.dropFirst("reaperd ".count)))], 1)
        page.family(
            "reaperd_config_last_reload_successful", "gauge",
            "1 when the last reload applied (or none was asked for), 0 when it was refused.")
        page.sample("reaperd_config_last_reload_successful", [], lastReloadError == nil ? 1 : 0)
        page.family(
            "reaperd_config_last_reload_success_timestamp_seconds", "gauge",
            "When the running configuration was loaded, in seconds since the epoch.")
        page.sample("reaperd_config_last_reload_success_timestamp_seconds", [], configLoadedAtWallClock)
        // The client libraries' process collector, for dashboards that expect it.
        page.family("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.")
        page.sample("process_cpu_seconds_total", [], ProcessStats.cpuSeconds())
        page.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
        page.sample("process_resident_memory_bytes", [], ProcessStats.residentBytes())
        page.family("process_open_fds", "gauge", "Open file descriptors.")
        page.sample("process_open_fds", [], ProcessStats.openDescriptors())
        page.family("process_max_fds", "gauge", "The limit on open file descriptors.")
        page.sample("process_max_fds", [], ProcessStats.maxDescriptors())
        page.family("process_start_time_seconds", "gauge", "Start time of the process, in seconds since the epoch.")
        page.sample("process_start_time_seconds", [], startedAtWallClock)
        return page.text
    }
}

/// Writes metric families with HELP/TYPE lines and escaped label values.
struct PrometheusText {
    private(set) var text = ""

    mutating func family(_ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        let rendered = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : "\(value)"
        text += " \(rendered)\n"
    }

    static func escape(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}
