/// The daemon's side of the descriptor store (`ConnectionStore` decides what is
/// stored and when it is removed): adopting the connections that came back at
/// start, and shutting down into the store on SIGTERM.
extension Daemon {
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

    /// Rebuilds the connection table from the store: peer and upstream addresses
    /// from the sockets, health from the next sweep. Pairs whose sockets died
    /// meanwhile, or whose listener is gone, are closed and removed from the store.
    func recoverStoredConnections() {
        let recovered = store.takeRecovered()
        guard !recovered.isEmpty else { return }
        var counts = (recovered: 0, dropped: 0, reset: 0)
        let synBias = CrashAudit.synBias()
        if synBias == nil {
            logger.warning(
                "cannot read the kernel's TCP byte counters: recovered connections are not checked for bytes a crash lost"
            )
        }
        for stored in recovered {
            switch adopt(stored, synBias: synBias) {
            case .recovered: counts.recovered += 1
            case .lostBytes: counts.reset += 1
            case .died:
                counts.dropped += 1
                store.discard(stored)
            case .endedAtOnce:
                // Ended by its first look (its end removed it from the store).
                counts.dropped += 1
            }
            nextConnectionID = max(nextConnectionID, stored.id + 1)
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
        /// Dead, or its listener gone: still the store's, to discard.
        case died
        /// Adopted, but it ended at its first look.
        case endedAtOnce
    }

    private func adopt(_ stored: RecoveredConnection, synBias: Int64?) -> Adoption {
        guard let state = listener(named: stored.listener, acceptedOn: stored.client),
            (state.settings.mode == .relay) == (stored.upstream != nil),
            Self.isAlive(stored.client), stored.upstream.map(Self.isAlive) ?? true,
            let peer = try? Sockets.peerAddress(stored.client),
            let upstreamAddress = stored.upstream.map({ try? Sockets.peerAddress($0) }) ?? .some(nil),
            stored.upstream == nil || upstreamAddress != nil
        else { return .died }
        // Before anything reads a byte: the counters as the old process left them.
        let lost = synBias.flatMap {
            CrashAudit.lostBytes(clientFD: stored.client, upstreamFD: stored.upstream, synBias: $0)
        }
        let upstreamFD: FileDescriptor? = if let fd = stored.upstream { FileDescriptor(owning: fd) } else { nil }
        let connection = Connection(
            recoveredID: stored.id, listener: state, client: FileDescriptor(owning: stored.client), peer: peer,
            upstream: upstreamFD, upstreamAddress: upstreamAddress, acceptedAt: stored.acceptedAt, owner: self,
            now: loop.now)
        store.adopted(stored, by: connection)
        _ = openConnections.take(limit: .max)
        _ = state.openCount.take(limit: .max)
        table.add(connection)
        if let lost, lost > 0 {
            connection.reapCrashLoss(lostBytes: lost)
            return .lostBytes
        }
        guard connection.resume() else { return .endedAtOnce }
        sweepSoon(connection)
        return .recovered
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
            // A worker's stores are the primary's to send: the primary waits
            // for every worker to have handed its own, then for PID 1 to take them.
            let flushed = !isPrimary || (workersFinished && store.isFlushed)
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
