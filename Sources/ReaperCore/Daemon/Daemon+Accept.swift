extension Daemon {
    /// Accepts what is queued on one listening socket, up to a small batch: each
    /// accept also sets up an upstream connect, and bytes of connections already
    /// open should not wait behind a long run of them (tail latency).
    func accept(from endpoint: ListeningEndpoint) {
        guard !stopping, !acceptPaused else { return }
        for _ in 0..<Self.acceptBatch {
            let result: IOResult<Sockets.Accepted>
            do {
                result = try Sockets.acceptWithPeer(endpoint.socket.raw)
            } catch {
                acceptFailed(error)
                return
            }
            guard case .processed(let accepted) = consume result else { return }
            admit(accepted.socket, peer: accepted.peer, on: endpoint)
        }
    }

    static let acceptBatch = 16

    private func admit(_ client: consuming FileDescriptor, peer: SocketAddress, on endpoint: ListeningEndpoint) {
        let listener = endpoint.listener
        if table.count >= maxConnections || listener.open >= listener.connection.maxConnections {
            // Closed at once: a client past the limit costs one accept and one close.
            listener.counters.refusedLimit += 1
            if logger.isEnabled(.debug) {
                logger.debug("connection refused: limit reached", [("REAPERD_LISTENER", listener.name)])
            }
            client.close()
            return
        }
        listener.counters.accepted += 1
        let upstream: SocketAddress? =
            listener.settings.mode == .relay ? listener.settings.upstream.map(\.socketAddress) : nil
        let connection = Connection(
            id: nextConnectionID, listener: listener, client: client, peer: peer, upstream: upstream, owner: self,
            now: loop.now)
        nextConnectionID += 1
        listener.open += 1
        table.add(connection)
        _ = connection.start()
    }

    /// EMFILE/ENFILE leave the connection in the queue, so the socket stays
    /// readable and accepting again at once would spin the CPU. Stop accepting
    /// for a moment instead; say so at most every ten seconds.
    private func acceptFailed(_ error: SystemError) {
        if error.errno.isDescriptorExhaustion {
            exhaustionCount += 1
            let now = loop.now
            if exhaustionWarnedAt.map({ now.since($0) >= .seconds(10) }) ?? true {
                logger.warning(
                    "out of file descriptors, accepting paused",
                    [
                        ("REAPERD_ERROR", "\(error)"), ("REAPERD_TIMES", "\(exhaustionCount)"),
                        ("REAPERD_CONNECTIONS", "\(table.count)"),
                    ], event: .acceptPaused)
                exhaustionWarnedAt = now
                exhaustionCount = 0
            }
            pauseAccepting(for: .milliseconds(250))
        } else if !error.errno.isAcceptAgain {
            logger.error("accept failed", [("REAPERD_ERROR", "\(error)")])
            pauseAccepting(for: .milliseconds(250))
        }
    }

    func pauseAccepting(for delay: Duration) {
        guard !acceptPaused else { return }
        acceptPaused = true
        setAcceptInterest([])
        loop.schedule(after: delay) { [weak self] in
            guard let self, !self.stopping else { return }
            self.acceptPaused = false
            self.setAcceptInterest([.readable])
        }
    }

    private func setAcceptInterest(_ interest: EpollEvents) {
        for endpoint in endpoints {
            if let registration = endpoint.registration { loop.modify(registration, interest: interest) }
        }
    }
}
