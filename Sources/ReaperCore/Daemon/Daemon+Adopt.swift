internal import Glibc

/// Adopt mode (SPEC §9): beside a service instead of in front of it. For each
/// `[service:NAME]` a BPF sock_ops program on the service's cgroup turns
/// keepalive and the user timeout on as its connections are established
/// (inbound and outbound), the ones that existed before are retrofitted, and
/// every sweep reads all of them in one sock_diag dump: health as for relayed
/// connections, the kernel's own probes end dead peers (the service sees
/// ETIMEDOUT), and SOCK_DESTROY ends what the kernel's timers do not cover
/// (idle_timeout, half_close_timeout, reaperctl reap).
///
/// A connection the kernel killed is gone from the next dump (a closed socket
/// leaves the hash tables even before its owner closes it), so its reason is
/// the evidence of the last look: probes outstanding → `keepalive`; data
/// unacknowledged and retransmitting → `user-timeout`; neither → an ordinary
/// close, counted and logged at debug level.
extension Daemon {
    /// Attaches to every service at start. The kernel refusing (no CAP_BPF or
    /// CAP_NET_ADMIN) stops start-up with the missing capability named; a unit
    /// not running yet is only a warning: it is covered once it starts.
    func startServices() throws(StartError) {
        guard !configuration.services.isEmpty else { return }
        let missing = Capabilities.missing([.bpf, .netAdmin])
        guard missing.isEmpty else {
            let names = configuration.services.map { "[service:\($0.name)]" }.joined(separator: ", ")
            throw StartError(
                message: "adopt mode (\(names)) needs \(missing.map(\.description).joined(separator: " and ")), "
                    + "which this process lacks: run it from reaperd-adopt.service, or remove the [service:] sections",
                errno: Errno.notPermitted.code)
        }
        let retrofitting = Capabilities.missing([.sysPtrace, .dacReadSearch])
        if !retrofitting.isEmpty {
            logger.warning(
                "without \(retrofitting.map(\.description).joined(separator: " and ")), connections that exist "
                    + "before reaperd attaches to a service are watched but get no keepalive (pidfd_getfd, "
                    + "/proc/PID/fd), and reaps do not name the owning process")
        }
        do {
            try prepareAdopting()
        } catch {
            throw StartError(message: "adopt mode: \(error)", errno: error.errno.code)
        }
        for settings in configuration.services {
            let service = AdoptedService(settings: settings)
            services[settings.name] = service
            serviceOrder.append(settings.name)
            do {
                // Loaded now, so a kernel that refuses is a start-up error even
                // while the unit is not running yet.
                try service.prepareProgram()
                try follow(service, now: loop.now)
            } catch {
                throw StartError(message: "[service:\(settings.name)]: \(error)", errno: error.errno.code)
            }
        }
    }

    private func prepareAdopting() throws(AdoptError) {
        if sockDiag == nil { sockDiag = try SockDiag() }
        if cgroupMount == nil {
            guard let mount = Cgroups.mountPoint() else {
                throw AdoptError("finding the cgroup v2 hierarchy in /proc/self/mountinfo", .noEntry)
            }
            cgroupMount = mount
        }
    }

    /// A reload: services added, removed (detached; their connections are only
    /// forgotten, never closed) or changed (the program rebuilt and attached
    /// again). A kernel refusal is logged and retried by each sweep.
    func applyServices(_ next: Configuration) {
        let wanted = Set(next.services.map(\.name))
        for name in serviceOrder where !wanted.contains(name) {
            services[name]?.detach()
            services[name] = nil
            logger.info("service no longer adopted", [("REAPERD_LISTENER", name)])
        }
        serviceOrder.removeAll { !wanted.contains($0) }
        guard !next.services.isEmpty else { return }
        do {
            try prepareAdopting()
        } catch {
            logger.error("adopt mode: \(error)", [("REAPERD_ERROR", "\(error)")])
            return
        }
        for settings in next.services {
            if let service = services[settings.name] {
                service.update(settings)
            } else {
                services[settings.name] = AdoptedService(settings: settings)
                serviceOrder.append(settings.name)
            }
        }
    }

    var orderedServices: [AdoptedService] { serviceOrder.compactMap { services[$0] } }

    /// Attaches to the service's cgroup when it is new (a start, a unit
    /// restart), and retrofits the connections already there.
    private func follow(_ service: AdoptedService, now: Instant) throws(AdoptError) {
        guard let mount = cgroupMount else { return }
        switch try service.follow(mount: mount, now: now) {
        case .unchanged:
            break
        case .attached(let path):
            report(service, nil)
            let existing = (try? sockDiag?.dump(cgroupID: service.cgroupID ?? 0)) ?? []
            var wanted: [UInt32: UInt64] = [:]
            for socket in existing where service.covers(socket) { wanted[socket.inode] = socket.cookie }
            let outcome = Retrofit.apply(cgroup: path, wanted: wanted, settings: service.settings.connection)
            logger.info(
                "adopting \(service.settings.target): keepalive on for its new connections, "
                    + "\(outcome.covered) of \(wanted.count) existing ones retrofitted",
                [
                    ("REAPERD_LISTENER", service.settings.name), ("REAPERD_CGROUP", path),
                    ("REAPERD_RETROFITTED", "\(outcome.covered)"),
                ])
            if let failed = outcome.failed {
                logger.warning(
                    "service \(service.settings.name): connections older than reaperd's attachment are watched "
                        + "but have no keepalive: \(failed) (retrofitting needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)",
                    [("REAPERD_LISTENER", service.settings.name), ("REAPERD_ERROR", "\(failed)")])
            }
        case .lost:
            report(service, "\(service.settings.target) stopped: its cgroup is gone; covered again when it starts")
        case .absent:
            report(service, "\(service.settings.target) has no cgroup yet (not running); covered once it starts")
        }
    }

    /// Logs a lasting problem once, and its end.
    private func report(_ service: AdoptedService, _ problem: String?) {
        guard problem != service.reported else { return }
        service.reported = problem
        if let problem {
            logger.warning(
                "service \(service.settings.name): \(problem)", [("REAPERD_LISTENER", service.settings.name)])
        }
    }

    /// The sweep's part: one dump per service, health and reaps. Returns the
    /// sockets examined.
    func sweepServices(now: Instant) -> Int {
        var examined = 0
        for service in orderedServices {
            do {
                try follow(service, now: now)
            } catch {
                report(service, "\(error)")
            }
            guard let id = service.cgroupID, let diag = sockDiag else {
                // The unit stopped: its connections went with it.
                for connection in service.connections.values { end(connection, of: service, as: nil, now: now) }
                service.connections.removeAll()
                service.state.openCount.set(0)
                continue
            }
            let sockets: [DiagSocket]
            do {
                sockets = try diag.dump(cgroupID: id)
            } catch {
                report(service, "\(error)")
                continue
            }
            var seen = Set<UInt64>()
            for socket in sockets where service.covers(socket) {
                examined += 1
                seen.insert(socket.cookie)
                let connection: AdoptedConnection
                if let known = service.connections[socket.cookie] {
                    connection = known
                } else {
                    connection = AdoptedConnection(id: nextConnectionID, socket: socket, now: now)
                    nextConnectionID += 1
                    connection.bytesAtLastSweep = (socket.info?.bytesAcked ?? 0) &+ (socket.info?.bytesReceived ?? 0)
                    service.connections[socket.cookie] = connection
                    // Seen for the first time: "accepted" for an adopted service.
                    service.state.counters.accepted += 1
                }
                if let reason = observe(connection, socket, of: service, now: now) {
                    do {
                        try diag.destroy(socket)
                        service.connections[socket.cookie] = nil
                        end(connection, of: service, as: reason, now: now)
                    } catch {
                        report(service, "cannot reap \(reason.rawValue): \(error)")
                    }
                }
            }
            for (cookie, connection) in service.connections where !seen.contains(cookie) {
                service.connections[cookie] = nil
                end(connection, of: service, as: Self.verdict(connection, service.settings.connection), now: now)
            }
            service.state.openCount.set(service.connections.count)
        }
        return examined
    }

    /// Health from this look, and a reason to destroy it now, if any.
    private func observe(
        _ connection: AdoptedConnection, _ socket: DiagSocket, of service: AdoptedService, now: Instant
    ) -> ReapReason? {
        let info = socket.info
        connection.info = info
        let total = (info?.bytesAcked ?? 0) &+ (info?.bytesReceived ?? 0)
        let moved = total != connection.bytesAtLastSweep
        connection.bytesAtLastSweep = total
        if moved { connection.lastActivity = now }
        // One side's FIN is through (CLOSE_WAIT: the peer's; FIN_WAIT: the service's).
        let halfOpen: Bool
        switch TCPInfo.State(rawValue: socket.state) {
        case .closeWait?, .finWait1?, .finWait2?: halfOpen = true
        default: halfOpen = false
        }
        if halfOpen {
            if connection.halfClosedAt == nil { connection.halfClosedAt = now }
        } else {
            connection.halfClosedAt = nil
        }
        let silence = connection.halfClosedAt.map { now.since(max($0, connection.lastActivity)) }
        let observation = SweepObservation(
            client: info, upstream: nil, bytesMoved: moved, idleFor: now.since(connection.lastActivity),
            halfCloseSilence: silence)
        connection.health = ReapPolicy.health(observation)
        connection.probesLastSeen = info?.probes ?? 0
        connection.retransmittingLastSeen =
            (info?.unacked ?? 0) > 0 && ((info?.retransmits ?? 0) > 0 || (info?.backoff ?? 0) > 0)
        if connection.owner == nil && (connection.probesLastSeen > 0 || connection.retransmittingLastSeen),
            let path = service.cgroupPath
        {
            connection.owner = Retrofit.owner(of: connection.inode, in: path)
        }
        return ReapPolicy.decide(observation, settings: service.settings.connection)
    }

    /// Why a connection vanished from the dump, from what the last look saw.
    static func verdict(_ connection: AdoptedConnection, _ settings: ConnectionSettings) -> ReapReason? {
        if connection.probesLastSeen > 0 && settings.keepalive { return .keepalive }
        if connection.retransmittingLastSeen && settings.userTimeoutMilliseconds > 0 { return .userTimeout }
        return nil
    }

    /// One adopted connection is over: reaped for `reason`, or closed by its peers.
    private func end(_ connection: AdoptedConnection, of service: AdoptedService, as reason: ReapReason?, now: Instant)
    {
        let state = service.state
        state.counters.bytesIn += connection.bytesIn
        state.counters.bytesOut += connection.bytesOut
        guard let reason else {
            state.counters.closed += 1
            if logger.isEnabled(.debug) {
                logger.debug("adopted connection closed", adoptedFields(connection, service, now: now))
            }
            return
        }
        state.counters.reaped[reason, default: 0] += 1
        reapsSinceStart += 1
        let why: String
        switch reason {
        case .keepalive: why = "keepalive probes went unanswered; the kernel closed it"
        case .userTimeout: why = "data stayed unacknowledged past the user timeout; the kernel closed it"
        case .idleTimeout: why = "no bytes moved for the idle timeout; destroyed"
        case .halfCloseTimeout: why = "it stayed half-closed past the timeout; destroyed"
        case .admin: why = "an operator asked for it; destroyed"
        case .upstreamDead, .crashLoss: why = reason.rawValue
        }
        var fields = adoptedFields(connection, service, now: now)
        fields.insert(("REAPERD_REASON", reason.rawValue), at: 4)
        let who = connection.owner.map { " (\($0.command) [\($0.pid)])" } ?? ""
        logger.notice(
            "reaped adopted connection \(connection.id) from \(connection.peer.map { "\($0)" } ?? "?") "
                + "on \(service.settings.name)\(who) after \(now.since(connection.firstSeen).components.seconds)s: \(why)",
            fields, event: .reap)
    }

    func adoptedFields(_ connection: AdoptedConnection, _ service: AdoptedService, now: Instant) -> [(
        name: String, value: String
    )] {
        var fields: [(name: String, value: String)] = [
            ("REAPERD_CONNECTION_ID", "\(connection.id)"),
            ("REAPERD_LISTENER", service.settings.name),
            ("REAPERD_PEER", connection.peer.map { "\($0)" } ?? "?"),
            ("REAPERD_UPSTREAM", connection.local.map { "\($0)" } ?? "?"),
            ("REAPERD_AGE_SEC", "\(now.since(connection.firstSeen).components.seconds)"),
            ("REAPERD_IDLE_SEC", "\(now.since(connection.lastActivity).components.seconds)"),
            ("REAPERD_BYTES_IN", "\(connection.bytesIn)"),
            ("REAPERD_BYTES_OUT", "\(connection.bytesOut)"),
            ("REAPERD_PROBES", "\(connection.probesLastSeen)"),
            ("REAPERD_ADOPTED", "1"),
        ]
        if let owner = connection.owner {
            fields.append(("REAPERD_PID", "\(owner.pid)"))
            fields.append(("REAPERD_COMM", owner.command))
        }
        return fields
    }

    /// `reaperctl reap ID` of an adopted connection: SOCK_DESTROY.
    func reapAdopted(id: UInt64) -> Bool? {
        for service in orderedServices {
            guard let (cookie, connection) = service.connections.first(where: { $0.value.id == id }) else { continue }
            guard let diag = sockDiag, let cgroup = service.cgroupID,
                let socket = (try? diag.dump(cgroupID: cgroup))?.first(where: { $0.cookie == cookie })
            else { return false }
            do {
                try diag.destroy(socket)
            } catch {
                return false
            }
            service.connections[cookie] = nil
            end(connection, of: service, as: .admin, now: loop.now)
            return true
        }
        return nil
    }
}
