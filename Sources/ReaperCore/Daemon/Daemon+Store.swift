/// Connections that survive restarts and crashes: every connection that has
/// lived `fd_store_min_age` and every listening socket sit in systemd's file
/// descriptor store, and come back to the next reaperd process.
///
/// This file alone decides what is stored, under which name, and when it is
/// removed; it alone writes `Connection.storedNames`. Invariants:
/// - A connection is stored whole or not at all: both sockets, or neither.
/// - While stored, PID 1 holds a duplicate of each socket, so closing ours does
///   not take it out of epoll: `Connection.end` deregisters explicitly (and only
///   then; an unstored socket's close(2) leaves the set by itself).
/// - Every name stored is removed exactly once: when the connection ends
///   (`unstoreConnection`), or when a recovered one cannot be adopted. A store
///   still waiting in the notify queue is withdrawn instead (PID 1 never saw it).
/// - On SIGTERM every living connection not yet stored is stored before exit,
///   so `systemctl restart` keeps all of them; only a crash loses the youngest.
extension Daemon {
    /// Hands both sockets of `connection` to the store, or neither.
    func storeConnection(_ connection: Connection) {
        guard let store, !connection.isStored, connection.phase == .relaying,
            let client = connection.clientDescriptor
        else { return }
        let names = StoredName.names(for: connection)
        guard store.store(client, name: names.client) else { return storeSkipped() }
        if let upstreamName = names.upstream {
            guard let upstream = connection.upstreamDescriptor, store.store(upstream, name: upstreamName) else {
                // Half a pair is useless after a restart: take the client side back.
                unstore(names.client)
                return storeSkipped()
            }
        }
        connection.storedNames = names
    }

    /// The sweep's part: a connection is stored once it has lived
    /// `fd_store_min_age`, so connections shorter than that never reach PID 1.
    func storeIfDue(_ connection: Connection, now: Instant) {
        guard store != nil, !connection.isStored, connection.phase == .relaying,
            now.since(connection.startedAt) >= configuration.daemon.fdStoreMinAge
        else { return }
        storeConnection(connection)
    }

    /// The connection is ending: its names leave the store.
    func unstoreConnection(_ connection: Connection) {
        guard let names = connection.storedNames else { return }
        // FIN now, although PID 1 still holds a copy until it reads the removal;
        // it also drops a copy whose socket hangs up, should the removal be lost.
        // A reset passed on must stay a reset: SO_LINGER 0 is set, and the RST
        // goes out when PID 1 closes its copy; a FIN now would say "complete".
        if !connection.endsWithReset {
            if let fd = connection.clientDescriptor { Sockets.shutdownBoth(fd) }
            if let fd = connection.upstreamDescriptor { Sockets.shutdownBoth(fd) }
        }
        unstore(names.client)
        if let upstream = names.upstream { unstore(upstream) }
        connection.storedNames = nil
    }

    /// A stored listening socket for this listener and address, taken out of
    /// the received list so it is adopted once.
    func adoptStoredListener(_ listener: String, endpoint: Endpoint) -> ActivatedSocket? {
        let name = StoredName.listener(listener, address: endpoint.description)
        guard let index = storedListeners.firstIndex(where: { $0.name == name }) else { return nil }
        return storedListeners.remove(at: index)
    }

    /// True when the socket is now in the store.
    func storeListener(_ endpoint: ListeningEndpoint) -> Bool {
        guard let store, !endpoint.activated else { return false }
        return store.store(
            endpoint.socket.raw, name: StoredName.listener(endpoint.listener.name, address: endpoint.key))
    }

    func unstoreListener(_ endpoint: ListeningEndpoint) {
        guard endpoint.isStored, !endpoint.activated else { return }
        unstore(StoredName.listener(endpoint.listener.name, address: endpoint.key))
    }

    /// A reload moved `endpoint` (same address) to another listener, or renamed
    /// its listener: the stored socket follows under the new name, or the next
    /// start would not find it and fail to bind its address (EADDRINUSE: PID 1
    /// still holds the old socket).
    func restoreRenamedListener(_ endpoint: ListeningEndpoint, storedAs previous: String) {
        guard endpoint.isStored, !endpoint.activated else { return }
        unstore(StoredName.listener(previous, address: endpoint.key))
        endpoint.isStored = storeListener(endpoint)
    }

    /// The listener a recovered connection belongs to: the one its stored name
    /// says, or, when that one was renamed or moved since, the one now serving
    /// the address the client was accepted on.
    private func listener(named name: String, acceptedOn fd: Int32) -> ListenerState? {
        if let state = listeners[name], state.configured { return state }
        guard let local = try? Sockets.localAddress(fd) else { return nil }
        for endpoint in endpoints {
            guard let bound = try? Sockets.localAddress(endpoint.socket.raw), bound.family == local.family,
                bound.port == local.port
            else { continue }
            // The same address, or a wildcard listener on that port.
            let host = bound.description.dropLast("\(bound.port)".count + 1)
            if bound.description == local.description || host == "0.0.0.0" || host == "[::]" {
                return endpoint.listener
            }
        }
        return nil
    }

    /// Stored listening sockets the configuration no longer names.
    func releaseUnadoptedListeners() {
        for socket in storedListeners {
            unstore(socket.name)
            FileDescriptor(owning: socket.descriptor).close()
            logger.info("stored listening socket no longer configured, released", [("REAPERD_FDNAME", socket.name)])
        }
        storedListeners.removeAll()
    }

    /// Rebuilds the connection table from the store: peer and upstream addresses
    /// from the sockets, health from the next sweep. Pairs whose sockets died
    /// meanwhile, or whose listener is gone, are closed and removed from the store.
    func recoverStoredConnections() {
        guard !storedConnections.isEmpty else { return }
        var clients: [UInt64: (listener: String, fd: Int32, name: String, acceptedAt: Instant?)] = [:]
        var upstreams: [UInt64: (fd: Int32, name: String)] = [:]
        for socket in storedConnections {
            switch StoredName(parsing: socket.name) {
            case .client(let id, let listener, let accepted):
                let acceptedAt = accepted.map {
                    Instant(nanoseconds: $0.multipliedReportingOverflow(by: 1_000_000).partialValue)
                }
                clients[id] = (listener, socket.descriptor, socket.name, acceptedAt)
            case .upstream(let id, _): upstreams[id] = (socket.descriptor, socket.name)
            default: break
            }
        }
        storedConnections.removeAll()
        var counts = (recovered: 0, dropped: 0, reset: 0)
        let synBias = CrashAudit.synBias()
        if synBias == nil {
            logger.warning(
                "cannot read the kernel's TCP byte counters: recovered connections are not checked for bytes a crash lost"
            )
        }
        for id in clients.keys.sorted() {
            guard let client = clients[id] else { continue }
            let upstream = upstreams.removeValue(forKey: id)
            switch adopt(id: id, client: client, upstream: upstream, synBias: synBias) {
            case .recovered: counts.recovered += 1
            case .lostBytes: counts.reset += 1
            case .died:
                counts.dropped += 1
                unstore(client.name)
                if let upstream { unstore(upstream.name) }
            case .endedAtOnce:
                // Ended by its first look (its end removed it from the store).
                counts.dropped += 1
            }
            nextConnectionID = max(nextConnectionID, id + 1)
        }
        for (_, orphan) in upstreams {
            counts.dropped += 1
            unstore(orphan.name)
            FileDescriptor(owning: orphan.fd).close()
        }
        logger.notice(
            "recovered \(counts.recovered) connections from the file descriptor store, "
                + "dropped \(counts.dropped) that had died, "
                + "reset \(counts.reset) that lost bytes in a crash",
            [
                ("REAPERD_RECOVERED", "\(counts.recovered)"), ("REAPERD_DROPPED", "\(counts.dropped)"),
                ("REAPERD_CRASH_LOSS", "\(counts.reset)"),
            ], event: .start)
    }

    /// What became of one stored pair.
    private enum Adoption {
        case recovered
        /// Reset and reaped as `crash-loss` (removed from the store by its end).
        case lostBytes
        /// Dead, of the wrong kind, or its listener gone: closed, still stored.
        case died
        /// Adopted, but it ended at its first look.
        case endedAtOnce
    }

    private func adopt(
        id: UInt64, client: (listener: String, fd: Int32, name: String, acceptedAt: Instant?),
        upstream: (fd: Int32, name: String)?, synBias: Int64?
    )
        -> Adoption
    {
        guard let state = listener(named: client.listener, acceptedOn: client.fd),
            (state.settings.mode == .relay) == (upstream != nil),
            Self.isAlive(client.fd), upstream.map({ Self.isAlive($0.fd) }) ?? true,
            let peer = try? Sockets.peerAddress(client.fd),
            let upstreamAddress = upstream.map({ try? Sockets.peerAddress($0.fd) }) ?? .some(nil),
            upstream == nil || upstreamAddress != nil
        else {
            FileDescriptor(owning: client.fd).close()
            if let upstream { FileDescriptor(owning: upstream.fd).close() }
            return .died
        }
        // Before anything reads a byte: the counters as the old process left them.
        let lost = synBias.flatMap { CrashAudit.lostBytes(clientFD: client.fd, upstreamFD: upstream?.fd, synBias: $0) }
        let upstreamFD: FileDescriptor? = if let upstream { FileDescriptor(owning: upstream.fd) } else { nil }
        let connection = Connection(
            recoveredID: id, listener: state, client: FileDescriptor(owning: client.fd), peer: peer,
            upstream: upstreamFD, upstreamAddress: upstreamAddress,
            storedAs: StoredNames(client: client.name, upstream: upstream?.name), acceptedAt: client.acceptedAt,
            owner: self, now: loop.now)
        state.open += 1
        table.add(connection)
        if let lost, lost > 0 {
            connection.reapCrashLoss(lostBytes: lost)
            return .lostBytes
        }
        return connection.resume() ? .recovered : .endedAtOnce
    }

    /// Still a connection worth relaying: no error, and established or
    /// half-closed either way (the peer's FIN received, or ours sent while the
    /// other direction still streams). The flows need no state carried over: a
    /// side whose peer sent FIN reads end-of-file again, and shutdown(SHUT_WR)
    /// of a side that already sent its FIN does nothing. Unix sockets report no
    /// TCP_INFO.
    private static func isAlive(_ fd: Int32) -> Bool {
        if Sockets.pendingError(fd) != nil { return false }
        guard let info = try? TCPInfo.read(fd) else { return (try? Sockets.peerAddress(fd)) != nil }
        let open: [TCPInfo.State] = [.established, .closeWait, .finWait1, .finWait2, .closing, .lastAck]
        return open.contains { $0.rawValue == info.state }
    }

    /// SIGTERM with the store in use: systemd keeps the sockets whether this is a
    /// restart (they come back) or a stop (systemd closes them). So stop reading,
    /// let the bytes already inside reaperd reach their destination, and exit
    /// without closing any connection. Connections younger than
    /// `fd_store_min_age` are stored now, and the exit waits until PID 1 has
    /// taken every message. Bounded by `shutdown_grace`.
    func shutdownIntoStore() {
        for connection in table.all {
            connection.draining = true
            storeConnection(connection)
        }
        let deadline = loop.now.adding(configuration.daemon.shutdownGrace)
        func check() {
            let holding = table.all.filter(\.holdsBytes).count
            let flushed = store?.isFlushed ?? true
            if (holding == 0 && flushed) || loop.now >= deadline {
                if !flushed {
                    logger.warning(
                        "the file descriptor store had not taken every connection when shutdown_grace ran out",
                        [("REAPERD_CONNECTIONS", "\(table.count)")])
                }
                if holding > 0 {
                    logger.warning(
                        "\(holding) connections still held bytes when shutdown_grace ran out; those bytes are lost",
                        [("REAPERD_CONNECTIONS", "\(holding)")])
                }
                logger.info(
                    "leaving \(table.count) connections in the file descriptor store",
                    [("REAPERD_CONNECTIONS", "\(table.count)")])
                finishShutdown()
                return
            }
            loop.schedule(after: .milliseconds(20)) { check() }
        }
        check()
    }
}
