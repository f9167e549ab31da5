/// What a connection needs from the daemon that owns it.
protocol ConnectionOwner: AnyObject {
    var loop: EventLoop { get }
    var pipes: PipePool { get }
    /// Both sides are connected and bytes may flow.
    func connectionEstablished(_ connection: Connection)
    /// About to close both sides (before the descriptors are closed).
    func connectionClosing(_ connection: Connection)
    func connection(_ connection: Connection, endedWith end: ConnectionEnd)
}

/// One client, its upstream (none in echo mode), and the bytes between them.
/// Owned by the loop thread; the reaper reads it and asks it to close.
final class Connection: EventHandler {
    enum Phase { case connecting, relaying, ended }
    enum Side { case client, upstream }

    let id: UInt64
    let listener: ListenerState
    let peer: SocketAddress
    /// Where this connection relays to; nil in echo mode.
    let upstreamAddress: SocketAddress?
    let startedAt: Instant
    private(set) var lastActivity: Instant
    /// When the first FIN arrived, while the other direction still flows.
    private(set) var halfClosedAt: Instant?
    private(set) var phase = Phase.connecting

    private var client: FileDescriptor?
    private var upstream: FileDescriptor?
    private var clientRegistration: Registration?
    private var upstreamRegistration: Registration?
    private var clientInterest: EpollEvents = []
    private var upstreamInterest: EpollEvents = []
    /// A side taken out of the epoll set for good (see `setInterest`).
    private var clientRetired = false
    private var upstreamRetired = false
    private var connectTimer: LoopTimer?
    private unowned let owner: any ConnectionOwner

    /// Client to upstream; in echo mode, client to client.
    private(set) var inbound = Flow()
    /// Upstream to client.
    private(set) var outbound = Flow()

    // What the last sweep saw; written by the reaper.
    var health = Health.idle
    var probes: UInt8 = 0
    var rttMicroseconds: UInt32 = 0
    var evidence = ReapEvidence()
    var bytesAtLastSweep: UInt64 = 0
    /// When the sweep next reads each socket's TCP_INFO (`ReapPolicy.nextCheck`).
    var nextClientCheck = Instant(nanoseconds: 0)
    var nextUpstreamCheck = Instant(nanoseconds: 0)
    /// Position in the daemon's connection table, for O(1) removal.
    var tableIndex = -1
    /// Both sockets are in systemd's file descriptor store.
    var isStored = false
    /// Shutting down into the store: read nothing more, so reaperd's pipes empty.
    var draining = false {
        didSet { if phase == .relaying { updateInterest() } }
    }
    /// Bytes sit in reaperd's pipes or buffers (would be lost by exiting now).
    var holdsBytes: Bool { inbound.pending > 0 || outbound.pending > 0 }

    var isEcho: Bool { upstreamAddress == nil }
    var bytesIn: UInt64 { inbound.bytes }
    var bytesOut: UInt64 { isEcho ? inbound.bytes : outbound.bytes }
    var clientDescriptor: Int32? { client?.raw }
    var upstreamDescriptor: Int32? { upstream?.raw }
    /// A TCP upstream (TCP_INFO can be read); stored, the sweep asks per connection.
    let upstreamIsTCP: Bool
    /// Bytes reaperd holds that the client has not taken yet.
    var bytesWaitingForClient: Bool { isEcho ? inbound.pending > 0 : outbound.pending > 0 }

    init(
        id: UInt64, listener: ListenerState, client: consuming FileDescriptor, peer: SocketAddress,
        upstream: SocketAddress?, owner: any ConnectionOwner, now: Instant
    ) {
        self.id = id
        self.listener = listener
        self.client = .some(client)
        self.peer = peer
        self.upstreamAddress = upstream
        self.upstreamIsTCP = upstream.map { !$0.isUnix } ?? false
        self.owner = owner
        self.startedAt = now
        self.lastActivity = now
    }

    /// Sets the client's options, registers it, and starts the upstream connect.
    /// Returns false when the connection already ended (its end was reported).
    func start() -> Bool {
        // Keepalive, user timeout and no-delay come from the listening socket:
        // Linux copies them to every socket accept(2) returns. The client joins
        // the epoll set once it has something to wait for (`setInterest`).
        guard client != nil else { return false }
        guard let upstreamAddress else {
            phase = .relaying
            owner.connectionEstablished(self)
            updateInterest()
            return true
        }
        return connect(to: upstreamAddress)
    }

    /// A connection received back from systemd's file descriptor store after a
    /// restart: both sides connected already, nothing in flight inside reaperd.
    convenience init(
        recoveredID id: UInt64, listener: ListenerState, client: consuming FileDescriptor, peer: SocketAddress,
        upstream: consuming FileDescriptor?, upstreamAddress: SocketAddress?, owner: any ConnectionOwner, now: Instant
    ) {
        self.init(
            id: id, listener: listener, client: client, peer: peer, upstream: upstreamAddress, owner: owner, now: now)
        self.upstream = upstream
        isStored = true
    }

    /// Starts watching a recovered connection.
    func resume() -> Bool {
        guard client != nil else { return false }
        phase = .relaying
        updateInterest()
        return phase != .ended
    }

    private func connect(to address: SocketAddress) -> Bool {
        do {
            let socket = try Sockets.stream(family: address.family)
            if !address.isUnix {
                SocketOptions.disableNagle(socket.raw)
                if listener.connection.upstreamKeepalive {
                    try SocketOptions.applyKeepalive(socket.raw, listener.connection)
                }
            }
            let result = try Sockets.connect(socket.raw, address)
            let raw = socket.raw
            upstream = .some(socket)
            upstreamRegistration = try owner.loop.register(raw, interest: [.writable], handler: self)
            upstreamInterest = [.writable]
            if case .processed = result {
                upstreamConnected()
            } else {
                connectTimer = owner.loop.schedule(after: listener.connection.connectTimeout) { [weak self] in
                    guard let self, self.phase == .connecting else { return }
                    self.end(
                        .upstreamFailed(
                            "connect \(address): timed out after \(self.listener.connection.connectTimeout)"))
                }
            }
            return phase != .ended
        } catch {
            end(.upstreamFailed("\(error.call) \(address): \(error.errno)"))
            return false
        }
    }

    private func upstreamConnected() {
        connectTimer?.cancel()
        connectTimer = nil
        phase = .relaying
        lastActivity = owner.loop.now
        owner.connectionEstablished(self)
        updateInterest()
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        guard phase != .ended else { return }
        let side: Side = registration == clientRegistration ? .client : .upstream
        if phase == .connecting {
            if side == .upstream {
                if let fd = upstream?.raw, let error = Sockets.pendingError(fd) {
                    end(.upstreamFailed("connect \(upstreamAddress.map { "\($0)" } ?? ""): \(error)"))
                } else if events.contains(.error) || events.contains(.hangup) {
                    end(.upstreamFailed("connect \(upstreamAddress.map { "\($0)" } ?? ""): hung up"))
                } else {
                    upstreamConnected()
                }
            } else if events.contains(.error) || events.contains(.hangup) {
                // The client left before the upstream answered.
                end(.closed)
            }
            return
        }
        if events.contains(.error) {
            // Bytes the peer sent before its reset are still queued: deliver them
            // first (reads return data before the error), then close.
            pump(readClient: side == .client, readUpstream: side == .upstream)
            guard phase != .ended else { return }
            let fd = side == .client ? client?.raw : upstream?.raw
            failed(side, fd.flatMap { Sockets.pendingError($0) })
            return
        }
        let readable = !events.isDisjoint(with: [.readable, .readHangup, .hangup])
        pump(readClient: side == .client && readable, readUpstream: side == .upstream && readable)
    }

    /// Moves bytes both ways as far as they go, then settles the state.
    private func pump(readClient: Bool, readUpstream: Bool) {
        guard let clientFD = client?.raw else { return }
        let readClient = readClient && !draining
        let readUpstream = readUpstream && !draining
        let pool = owner.pipes
        var delivered = 0
        if isEcho {
            do {
                delivered += try inbound.pump(
                    from: clientFD, to: clientFD, pool: pool, readSource: readClient, lastDirection: true)
            } catch {
                return failed(.client, error.systemError.errno)
            }
        } else if let upstreamFD = upstream?.raw {
            do {
                delivered += try inbound.pump(
                    from: clientFD, to: upstreamFD, pool: pool, readSource: readClient, lastDirection: outbound.isDone)
            } catch {
                return failed(error.isSource ? .client : .upstream, error.systemError.errno)
            }
            do {
                delivered += try outbound.pump(
                    from: upstreamFD, to: clientFD, pool: pool, readSource: readUpstream, lastDirection: inbound.isDone)
            } catch {
                return failed(error.isSource ? .upstream : .client, error.systemError.errno)
            }
        }
        if delivered > 0 { lastActivity = owner.loop.now }
        settle()
    }

    /// After bytes moved: finish when both directions are done, note a half-close,
    /// and recompute what each socket waits for.
    private func settle() {
        let done = isEcho ? inbound.isDone : (inbound.isDone && outbound.isDone)
        if done {
            end(.closed)
            return
        }
        if halfClosedAt == nil && (inbound.sourceClosed || outbound.sourceClosed) {
            halfClosedAt = owner.loop.now
        }
        updateInterest()
    }

    /// The one place that decides what each socket waits for (STYLE 17): read
    /// while there is room to put bytes, write while bytes wait.
    private func updateInterest() {
        let pool = owner.pipes
        var wanted: EpollEvents = []
        if inbound.wantsRead(pool) && !draining { wanted.formUnion([.readable, .readHangup]) }
        if isEcho {
            if inbound.wantsWrite { wanted.insert(.writable) }
            setInterest(wanted, side: .client, finished: inbound.sourceClosed && inbound.isDone)
            return
        }
        if outbound.wantsWrite { wanted.insert(.writable) }
        setInterest(wanted, side: .client, finished: inbound.sourceClosed && outbound.isDone)
        wanted = []
        if outbound.wantsRead(pool) && !draining { wanted.formUnion([.readable, .readHangup]) }
        if inbound.wantsWrite { wanted.insert(.writable) }
        setInterest(wanted, side: .upstream, finished: outbound.sourceClosed && inbound.isDone)
    }

    /// A socket that has sent FIN and received FIN reports EPOLLHUP forever,
    /// whatever the interest: it leaves the epoll set (and stays open until the
    /// connection ends).
    private func setInterest(_ wanted: EpollEvents, side: Side, finished: Bool) {
        guard let registration = side == .client ? clientRegistration : upstreamRegistration else {
            // Not in the epoll set yet: join it with the interest it needs.
            let retired = side == .client ? clientRetired : upstreamRetired
            guard !finished, !retired, let fd = side == .client ? client?.raw : upstream?.raw else { return }
            guard let registration = try? owner.loop.register(fd, interest: wanted, handler: self) else {
                // Only memory can refuse an epoll_ctl ADD of a socket we own.
                return end(.closed)
            }
            if side == .client {
                clientRegistration = registration
                clientInterest = wanted
            } else {
                upstreamRegistration = registration
                upstreamInterest = wanted
            }
            return
        }
        if finished {
            owner.loop.deregister(registration)
            if side == .client {
                clientRegistration = nil
                clientRetired = true
            } else {
                upstreamRegistration = nil
                upstreamRetired = true
            }
            return
        }
        let current = side == .client ? clientInterest : upstreamInterest
        guard wanted != current else { return }
        owner.loop.modify(registration, interest: wanted)
        if side == .client { clientInterest = wanted } else { upstreamInterest = wanted }
    }

    /// A side failed with `error`. The kernel giving up on a peer is a reap; a
    /// reset or broken pipe is an ordinary close, passed on as a reset.
    private func failed(_ side: Side, _ error: Errno?) {
        let peerGone = error == .timedOut || error == .hostUnreachable || error == .networkUnreachable
        if peerGone {
            if side == .client {
                var evidence = self.evidence
                if bytesWaitingForClient { evidence.sawDataInFlight = true }
                end(.reaped(ReapPolicy.clientDeathReason(error, evidence: evidence)))
            } else {
                end(.reaped(.upstreamDead))
            }
            return
        }
        if let fd = side == .client ? upstream?.raw : client?.raw { Sockets.abortOnClose(fd) }
        end(.closed)
    }

    /// Reaps now, for `reason` (the reaper and `reaperctl reap` call this).
    func reap(_ reason: ReapReason) {
        guard phase != .ended else { return }
        end(.reaped(reason))
    }

    /// Applies a listener's new keepalive settings to live sockets (reload).
    func applySettings(_ settings: ConnectionSettings) {
        // New keepalive timing: the next sweep reads both sockets afresh.
        nextClientCheck = Instant(nanoseconds: 0)
        nextUpstreamCheck = Instant(nanoseconds: 0)
        if let fd = client?.raw { try? SocketOptions.applyKeepalive(fd, settings) }
        guard upstreamIsTCP, let fd = upstream?.raw else { return }
        if settings.upstreamKeepalive {
            try? SocketOptions.applyKeepalive(fd, settings)
        } else {
            SocketOptions.disableKeepalive(fd)
        }
    }

    /// Closes both sides exactly once and tells the owner.
    func end(_ end: ConnectionEnd) {
        precondition(phase != .ended, "connection \(id) ended twice")
        phase = .ended
        connectTimer?.cancel()
        connectTimer = nil
        // Closing takes a socket out of the epoll set, unless systemd's store (or
        // its queue) holds a copy of it: then it must be removed explicitly.
        for registration in [clientRegistration, upstreamRegistration].compactMap({ $0 }) {
            if isStored { owner.loop.deregister(registration) } else { owner.loop.forget(registration) }
        }
        clientRegistration = nil
        upstreamRegistration = nil
        inbound.release(owner.pipes)
        outbound.release(owner.pipes)
        owner.connectionClosing(self)
        client = nil
        upstream = nil
        owner.connection(self, endedWith: end)
    }
}
