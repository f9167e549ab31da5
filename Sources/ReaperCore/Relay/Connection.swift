/// What a connection needs from the daemon that owns it.
protocol ConnectionOwner: AnyObject {
    var loop: EventLoop { get }
    var pipes: PipePool { get }
    /// Both sides are connected and bytes may flow.
    func connectionEstablished(_ connection: Connection)
    /// About to close both sides (before the descriptors are closed).
    func connectionClosing(_ connection: Connection)
    /// Another process (systemd's descriptor store) holds copies of its sockets.
    func isStored(_ connection: Connection) -> Bool
    /// Bytes moved, wait, or a side half-closed: the next sweep should look,
    /// not the one its idle schedule named. Called only while
    /// `watch.dueNextSweep` is false.
    func sweepSoon(_ connection: Connection)
    func connection(_ connection: Connection, endedWith end: ConnectionEnd)
}

/// One client, its upstream (none in echo mode), and the bytes between them.
/// Owned by the loop thread; the reaper reads it and asks it to close.
final class Connection: EventHandler, SweepQueueEntry {
    /// `awaitingHeader` (only with `accept_proxy_protocol`), then `connecting`
    /// (only for a relay), `relaying`, `ended`; never back.
    enum Phase { case awaitingHeader, connecting, relaying, ended }
    enum Side { case client, upstream }

    let id: UInt64
    let listener: ListenerState
    /// The client: the socket's peer, or the one a PROXY header named.
    private(set) var peer: SocketAddress
    /// The load balancer in front when a PROXY header named the client: the
    /// socket's own peer.
    var proxiedVia: SocketAddress? { proxiedViaBox?.address }
    /// The address the client connected to, as the PROXY header said.
    private var proxiedDestination: SocketAddress? { proxiedDestinationBox?.address }
    // A socket address takes 132 bytes; these three are rare or read late, so
    // they are boxed and an idle connection that has none pays 8 bytes each.
    private var proxiedViaBox: AddressBox?
    private var proxiedDestinationBox: AddressBox?
    /// Set while the PROXY header is still arriving.
    private var headerReader: ProxyHeaderReader?
    /// Where this connection relays to: while connecting, the address being
    /// tried; then the one it connected to. nil in echo mode.
    private(set) var upstreamAddress: SocketAddress?
    /// The upstream as configured when it is a host name (`db.internal:5432`),
    /// shown beside the address; nil for an address (and after a restart,
    /// which keeps only the socket).
    let upstreamName: String?
    /// The name's other addresses, in the resolver's order, to try should the
    /// current one fail.
    private var untried: [SocketAddress]
    /// One `connect_timeout` covers every address of a name.
    private var connectDeadline: Instant?
    /// Why each address tried so far failed, for the line when none works.
    private var connectFailures: [String] = []
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
    private var connectTimer: LoopTimer?
    /// unowned(unsafe): read on every event, and the checked form costs an atomic
    /// retain and release each time (a profile under redis-benchmark showed it).
    /// Invariant: the owner outlives every connection it owns; it holds them in
    /// its table until `end`, and an ended connection never reaches its owner.
    private unowned(unsafe) let owner: any ConnectionOwner
    /// The owner's loop and pipes, read on every event without a witness call;
    /// they live as long as the owner.
    private unowned(unsafe) let loop: EventLoop
    private unowned(unsafe) let pipes: PipePool

    /// Client to upstream; in echo mode, client to client.
    private(set) var inbound = Flow()
    /// Upstream to client.
    private(set) var outbound = Flow()

    /// What the reaper saw at its last sweep; the sweep alone writes it.
    var watch = ReaperWatch()
    var health: Health { watch.health }
    var probes: UInt8 { watch.probes }
    var rttMicroseconds: UInt32 { watch.rttMicroseconds }
    /// The first error the kernel reported on each socket, short of the peer
    /// being unreachable (a reset, a broken pipe): see `kernelReports`.
    private var clientFault: Errno?
    private var upstreamFault: Errno?
    /// Set while a transient error (no memory) holds the connection still.
    private var retryTimer: LoopTimer?
    /// The connection closes with RST on both sides (a reset passed on).
    private(set) var endsWithReset = false
    /// Events handled while relaying, and those among them that moved nothing
    /// and changed nothing: a busy loop shows as the second growing.
    private(set) var wakeups: UInt64 = 0
    private(set) var idleWakeups: UInt64 = 0
    /// Position in the daemon's connection table, for O(1) removal.
    var tableIndex = -1
    /// Position in the sweep's queue (`SweepQueue`), -1 when not queued.
    var sweepSlot = -1
    var sweepDue: Instant {
        get { watch.sweepDue }
        set { watch.sweepDue = newValue }
    }
    /// Shutting down into the store: read nothing more, so reaperd's pipes empty.
    var draining = false {
        didSet { if phase == .relaying { updateInterest() } }
    }
    /// Bytes sit in reaperd's pipes or buffers (would be lost by exiting now).
    var holdsBytes: Bool { inbound.pending > 0 || outbound.pending > 0 }
    /// The client's bytes moved last and no answer has moved since: a request
    /// under way (a query the database is still running). Request/response
    /// protocols end each exchange with the answer, so a relay whose last bytes
    /// went toward the client is between exchanges. When both directions move in
    /// one wake-up this stays set: a stop then waits rather than guesses.
    private(set) var awaitingAnswer = false

    /// Nothing is under way: relaying, no request awaiting its answer, no byte in
    /// reaperd nor in either socket's kernel queues, no half-close finishing.
    /// Closing it loses nothing, so a stop closes it at once instead of letting
    /// it sit out `shutdown_grace`. Asks the kernel (two ioctls per socket): for
    /// a stop, not for every event. A socket the kernel cannot answer for counts
    /// as busy.
    var isBetweenExchanges: Bool {
        guard phase == .relaying, !awaitingAnswer, !holdsBytes, halfClosedAt == nil, let clientFD = client?.raw
        else { return false }
        for fd in [clientFD, upstream?.raw].compactMap({ $0 }) {
            guard let queues = try? TCPInfo.queues(fd), queues.unread == 0, queues.unacknowledged == 0 else {
                return false
            }
        }
        return true
    }

    var isEcho: Bool { upstreamAddress == nil }
    /// The upstream socket's local address, asked of the kernel when first
    /// wanted (reaperctl connections, a reap's journal entry) rather than on
    /// every connect: what the service sees as its client (PostgreSQL's
    /// client_port, Redis's CLIENT LIST addr).
    private var upstreamLocalCache: AddressBox?
    private var upstreamLocalAsked = false
    var upstreamLocal: SocketAddress? {
        if upstreamLocalAsked { return upstreamLocalCache?.address }
        guard upstreamIsTCP, phase == .relaying, let fd = upstream?.raw else { return nil }
        let address = try? Sockets.localAddress(fd)
        upstreamLocalAsked = true
        upstreamLocalCache = address.map(AddressBox.init)
        return address
    }
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
        upstream: SocketAddress?, alternatives: [SocketAddress] = [], upstreamName: String? = nil,
        owner: any ConnectionOwner, now: Instant, acceptedAt: Instant? = nil
    ) {
        self.id = id
        self.listener = listener
        self.client = .some(client)
        self.peer = peer
        self.upstreamAddress = upstream
        self.untried = upstream == nil ? [] : alternatives
        self.upstreamName = upstreamName
        self.upstreamIsTCP = upstream.map { !$0.isUnix } ?? false
        self.owner = owner
        self.loop = owner.loop
        self.pipes = owner.pipes
        // A time from the future (a name from before a reboot) is no age at all.
        self.startedAt = acceptedAt.map { min($0, now) } ?? now
        self.lastActivity = now
    }

    /// Sets the client's options, registers it, and starts the upstream connect.
    /// Returns false when the connection already ended (its end was reported).
    func start() -> Bool {
        // Keepalive, user timeout and no-delay come from the listening socket:
        // Linux copies them to every socket accept(2) returns. The client joins
        // the epoll set once it has something to wait for (`setInterest`).
        guard let clientFD = client?.raw else { return false }
        if listener.connection.acceptProxyProtocol {
            return awaitHeader(clientFD)
        }
        return proceed()
    }

    /// Past the PROXY header, if any: connect (relay) or start echoing.
    private func proceed() -> Bool {
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
    /// `acceptedAt` is the original accept time when the stored name carried it.
    convenience init(
        recoveredID id: UInt64, listener: ListenerState, client: consuming FileDescriptor, peer: SocketAddress,
        upstream: consuming FileDescriptor?, upstreamAddress: SocketAddress?, acceptedAt: Instant?,
        owner: any ConnectionOwner, now: Instant
    ) {
        self.init(
            id: id, listener: listener, client: client, peer: peer, upstream: upstreamAddress, owner: owner,
            now: now, acceptedAt: acceptedAt)
        self.upstream = upstream
    }

    /// Starts watching a recovered connection.
    func resume() -> Bool {
        guard client != nil else { return false }
        phase = .relaying
        updateInterest()
        return phase != .ended
    }

    /// Starts connecting to `address`. The addresses of a name share one
    /// `connect_timeout`, split: each attempt may take an equal share of what
    /// is left, so an address that never answers (a black hole) cannot use
    /// up the time of those after it. A refusal comes back at once and leaves
    /// its share to the rest; the last address gets all that remains. One
    /// address (every numeric upstream) gets the whole timeout, as before.
    private func connect(to address: SocketAddress) -> Bool {
        let timeout = listener.connection.connectTimeout
        let now = Instant.now()
        let deadline = connectDeadline ?? now.adding(timeout)
        connectDeadline = deadline
        let left = deadline.since(now)
        let share = untried.isEmpty ? left : left / (untried.count + 1)
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
            upstreamRegistration = try loop.register(raw, interest: [.writable], handler: self)
            upstreamInterest = [.writable]
            if case .processed = result {
                upstreamConnected()
            } else {
                // unowned(unsafe), not weak: a weak reference gives the object a
                // side table, and every retain and release of it then takes the
                // slow path (a profile of new connections showed it). Safe
                // because every path that drops this timer cancels it, `end`
                // included, and a cancelled timer never runs.
                connectTimer = loop.schedule(after: share) { [unowned(unsafe) self] in
                    guard self.phase == .connecting else { return }
                    self.attemptFailed("connect \(address): timed out after \(ConfigDuration.text(share))")
                }
            }
            return phase != .ended
        } catch {
            return attemptFailed("\(error.call) \(address): \(error.errno)")
        }
    }

    /// The address being tried failed: the next one is tried while time is
    /// left, else the connection ends, every address's failure in its line.
    @discardableResult
    private func attemptFailed(_ why: String) -> Bool {
        connectTimer?.cancel()
        connectTimer = nil
        // Nothing else holds a connecting socket (never stored): closing it
        // takes it out of the epoll set.
        if let registration = upstreamRegistration { loop.forget(registration) }
        upstreamRegistration = nil
        upstreamInterest = []
        upstream = nil
        connectFailures.append(why)
        guard let deadline = connectDeadline, !untried.isEmpty, Instant.now() < deadline else {
            end(.upstreamFailed(connectFailures.joined(separator: "; ")))
            return false
        }
        let next = untried.removeFirst()
        upstreamAddress = next
        return connect(to: next)
    }

    // MARK: The PROXY header from a load balancer in front

    /// Waits for the header, within `proxy_header_timeout`; nothing else is
    /// read from the client, and the upstream is not dialled, until it is whole.
    private func awaitHeader(_ clientFD: Int32) -> Bool {
        phase = .awaitingHeader
        headerReader = ProxyHeaderReader()
        setInterest([.readable, .readHangup], side: .client)
        guard phase != .ended else { return false }
        let deadline = listener.connection.proxyHeaderTimeout
        // Cancelled by every path that drops it, `end` included (see `connect`).
        connectTimer = loop.schedule(after: deadline) { [unowned(unsafe) self] in
            guard self.phase == .awaitingHeader else { return }
            let got = self.headerReader?.received.count ?? 0
            self.end(.badProxyHeader("no complete PROXY header within \(deadline) (\(got) bytes)"))
        }
        readHeader()
        return phase != .ended
    }

    private func readHeader() {
        guard let fd = client?.raw, var reader = headerReader else { return }
        let step = reader.step(fd)
        headerReader = reader
        switch step {
        case .waiting:
            return
        case .closed:
            // Connected and left without a word (a load balancer's TCP health check).
            end(.closed)
        case .refused(let why):
            end(.badProxyHeader(why))
        case .done(let header):
            connectTimer?.cancel()
            connectTimer = nil
            headerReader = nil
            if let source = header.source {
                proxiedViaBox = AddressBox(peer)
                peer = source
                proxiedDestinationBox = header.destination.map(AddressBox.init)
            }
            // Out of the epoll set until relaying: bytes after the header must
            // wait, and a readable socket nobody reads would wake the loop for ever.
            setInterest([], side: .client)
            phase = .connecting
            _ = proceed()
        }
    }

    // MARK: The PROXY header toward the upstream

    /// Sends the header `upstream_proxy_protocol` asks for, ahead of every byte
    /// of the client's. A socket that has just connected has an empty send
    /// buffer of at least 4 KiB (the kernel's floor for SO_SNDBUF), so the
    /// header (at most 107 bytes) is taken whole or the socket has failed.
    /// Returns false when the connection ended.
    private func sendProxyHeader(_ version: ProxyProtocolVersion) -> Bool {
        guard let upstreamFD = upstream?.raw, let clientFD = client?.raw else { return false }
        let destination = proxiedDestination ?? (try? Sockets.localAddress(clientFD))
        let header = ProxyHeader(source: peer, destination: destination).encoded(version)
        let target = upstreamAddress.map { "\($0)" } ?? ""
        do {
            guard case .processed(let sent) = try Sockets.send(upstreamFD, header), sent == header.count else {
                end(.upstreamFailed("sending the PROXY header to \(target): the socket did not take it whole"))
                return false
            }
        } catch {
            end(.upstreamFailed("sending the PROXY header to \(target): \(error.errno)"))
            return false
        }
        return true
    }

    private func upstreamConnected() {
        connectTimer?.cancel()
        connectTimer = nil
        let version = listener.connection.upstreamProxyProtocol
        if version != .off && !sendProxyHeader(version) { return }
        phase = .relaying
        lastActivity = loop.now
        owner.connectionEstablished(self)
        updateInterest()
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        guard phase != .ended else { return }
        let side: Side = registration == clientRegistration ? .client : .upstream
        if phase == .awaitingHeader {
            return readHeader()
        }
        if phase == .connecting {
            if side == .upstream {
                if let fd = upstream?.raw, let error = Sockets.pendingError(fd) {
                    if error == .connectionReset || error == .brokenPipe {
                        // Accepted, then reset before this event: a greeting it
                        // sent first is still queued, so deliver it, then reset.
                        upstreamConnected()
                        return kernelReports(.upstream, error: error)
                    }
                    attemptFailed("connect \(upstreamAddress.map { "\($0)" } ?? ""): \(error)")
                } else if events.contains(.error) || events.contains(.hangup) {
                    attemptFailed("connect \(upstreamAddress.map { "\($0)" } ?? ""): hung up")
                } else {
                    upstreamConnected()
                }
            } else if events.contains(.error) || events.contains(.hangup) {
                // The client left before the upstream answered.
                end(.closed)
            }
            return
        }
        wakeups += 1
        let before = progressMark
        if events.contains(.error) {
            // Reading SO_ERROR clears it: what it says goes straight to the decision.
            kernelReports(side, error: descriptor(side).flatMap { Sockets.pendingError($0) })
        } else {
            let readable = !events.isDisjoint(with: [.readable, .readHangup, .hangup])
            pump(readClient: side == .client && readable, readUpstream: side == .upstream && readable)
        }
        if phase != .ended && progressMark == before { idleWakeups += 1 }
    }

    // MARK: How a connection ends

    /// The one entry point for what the kernel says about a socket, from an
    /// event, a failed read or write, or the sweep's TCP_INFO; it alone decides
    /// how the connection goes on or ends (SPEC §5):
    /// - the peer is unreachable (`ETIMEDOUT` after probes or the user timeout,
    ///   no route): reap, for a reason;
    /// - an ordinary reset or broken pipe: nothing more can be written to that
    ///   socket, but every byte it sent first is still delivered, and then the
    ///   reset passes on to the other peer;
    /// - `TCP_CLOSE` with no error: an orderly end (both FINs exchanged, seen by
    ///   the sweep before the event). Never a reason to drop a byte: read what
    ///   is left, and the FIN arrives as end-of-file.
    /// - a transient error (no memory or buffers): try again shortly.
    func kernelReports(_ side: Side, error: Errno?) {
        guard phase == .relaying else { return }
        if let error {
            if error.isPeerUnreachable { return reapDeadPeer(side) }
            if error.isTransient { return stallBriefly() }
            recordFault(side, error)
        }
        pump(readClient: true, readUpstream: true)
    }

    /// The socket on `side` failed: what waits for it is dropped (it can never be
    /// delivered), and the flow from it ends with a reset once its bytes are out.
    private func recordFault(_ side: Side, _ error: Errno) {
        if side == .client { clientFault = clientFault ?? error } else { upstreamFault = upstreamFault ?? error }
        let pool = pipes
        withFlow(to: side) { $0.abandon(pool) }
        withFlow(from: side) { $0.resetAtEnd = true }
    }

    /// The flow that reads from `side` (in echo mode the one flow both ways).
    private func withFlow(from side: Side, _ body: (inout Flow) -> Void) {
        if side == .upstream && !isEcho { body(&outbound) } else { body(&inbound) }
    }

    /// The flow that writes to `side`.
    private func withFlow(to side: Side, _ body: (inout Flow) -> Void) {
        if side == .client && !isEcho { body(&outbound) } else { body(&inbound) }
    }

    /// The kernel gave up on a peer. With data toward the client in flight the
    /// user timeout (or retransmission limit) did; with nothing in flight, the
    /// keepalive probes. The evidence is what earlier sweeps saw too: a socket
    /// the kernel has just killed reports little.
    private func reapDeadPeer(_ side: Side) {
        guard side == .client else { return end(.reaped(.upstreamDead)) }
        var evidence = watch.evidence
        if bytesWaitingForClient { evidence.sawDataInFlight = true }
        end(.reaped(ReapPolicy.clientDeathReason(evidence: evidence)))
    }

    /// No memory or buffers for this operation: stop watching both sockets for a
    /// moment instead of retrying at once from a level-triggered event.
    private func stallBriefly() {
        guard retryTimer == nil else { return }
        // `end` cancels it (see `connect`).
        retryTimer = loop.schedule(after: .milliseconds(50)) { [unowned(unsafe) self] in
            guard self.phase == .relaying else { return }
            self.retryTimer = nil
            self.pump(readClient: true, readUpstream: true)
        }
        updateInterest()
    }

    /// One side failed during a pump: which, and whether reading it or writing it.
    private struct SideFailure: Error {
        let side: Side
        let reading: Bool
        let errno: Errno
    }

    /// Moves bytes both ways as far as they go, then settles the state. A side
    /// that fails goes through the same decision as an error event; the flows
    /// that can still move then move (each side fails at most once, so this
    /// ends after a few rounds).
    private func pump(readClient: Bool, readUpstream: Bool) {
        let readClient = readClient && !draining
        let readUpstream = readUpstream && !draining
        let movedBefore = (toUpstream: inbound.bytes, toClient: outbound.bytes)
        var delivered = 0
        for _ in 0..<4 {
            guard phase == .relaying, retryTimer == nil, let clientFD = client?.raw else { break }
            do {
                delivered += try pumpFlows(clientFD, readClient: readClient, readUpstream: readUpstream)
                break
            } catch {
                let failure = error
                if failure.errno.isPeerUnreachable { return reapDeadPeer(failure.side) }
                if failure.errno.isTransient {
                    stallBriefly()
                    break
                }
                recordFault(failure.side, failure.errno)
                // Linux returns every queued byte before a read fails.
                if failure.reading { withFlow(from: failure.side) { $0.endSource(reset: true) } }
            }
        }
        if delivered > 0 { lastActivity = loop.now }
        if !watch.dueNextSweep && (delivered > 0 || holdsBytes) { owner.sweepSoon(self) }
        if !isEcho {
            if inbound.bytes != movedBefore.toUpstream {
                awaitingAnswer = true
            } else if outbound.bytes != movedBefore.toClient {
                awaitingAnswer = false
            }
        }
        if phase == .relaying { settle() }
    }

    private func pumpFlows(_ clientFD: Int32, readClient: Bool, readUpstream: Bool) throws(SideFailure) -> Int {
        let pool = pipes
        var delivered = 0
        guard !isEcho else {
            do {
                return try inbound.pump(
                    from: clientFD, to: clientFD, pool: pool, readSource: readClient, lastDirection: true)
            } catch {
                throw SideFailure(side: .client, reading: error.isSource, errno: error.systemError.errno)
            }
        }
        guard let upstreamFD = upstream?.raw else { return 0 }
        if !inbound.isDone {
            do {
                delivered += try inbound.pump(
                    from: clientFD, to: upstreamFD, pool: pool, readSource: readClient, lastDirection: outbound.isDone)
            } catch {
                throw SideFailure(
                    side: error.isSource ? .client : .upstream, reading: error.isSource, errno: error.systemError.errno)
            }
        }
        if !outbound.isDone {
            do {
                delivered += try outbound.pump(
                    from: upstreamFD, to: clientFD, pool: pool, readSource: readUpstream, lastDirection: inbound.isDone)
            } catch {
                throw SideFailure(
                    side: error.isSource ? .upstream : .client, reading: error.isSource, errno: error.systemError.errno)
            }
        }
        return delivered
    }

    /// After bytes moved: finish when both directions are done (a reset passes on
    /// as a reset, after the bytes that came before it), note a half-close, and
    /// recompute what each socket waits for.
    private func settle() {
        let done = isEcho ? inbound.isDone : (inbound.isDone && outbound.isDone)
        if done {
            if hasFault {
                endsWithReset = true
                if let fd = client?.raw { Sockets.abortOnClose(fd) }
                if let fd = upstream?.raw { Sockets.abortOnClose(fd) }
            }
            end(.closed)
            return
        }
        if halfClosedAt == nil && (inbound.sourceClosed || outbound.sourceClosed) {
            halfClosedAt = loop.now
            // The half-close timeout may fall before the idle schedule's next look.
            if !watch.dueNextSweep { owner.sweepSoon(self) }
        }
        updateInterest()
    }

    // MARK: What each socket waits for

    private func descriptor(_ side: Side) -> Int32? { side == .client ? client?.raw : upstream?.raw }

    /// The one place that decides what each socket waits for (STYLE 17), derived
    /// from the flows alone: read while there is room to put bytes, write while
    /// bytes wait for it.
    private func updateInterest() {
        guard phase == .relaying else { return }
        let pool = pipes
        let stalled = retryTimer != nil
        var wanted: EpollEvents = []
        if !stalled && !draining && inbound.wantsRead(pool) { wanted.formUnion([.readable, .readHangup]) }
        if isEcho {
            if !stalled && inbound.wantsWrite { wanted.insert(.writable) }
            return setInterest(wanted, side: .client)
        }
        if !stalled && outbound.wantsWrite { wanted.insert(.writable) }
        setInterest(wanted, side: .client)
        wanted = []
        if !stalled && !draining && outbound.wantsRead(pool) { wanted.formUnion([.readable, .readHangup]) }
        if !stalled && inbound.wantsWrite { wanted.insert(.writable) }
        setInterest(wanted, side: .upstream)
    }

    /// Puts a socket in the epoll set with `wanted`, or takes it out when it
    /// waits for nothing. Out, not just masked: EPOLLHUP and EPOLLERR are
    /// reported whatever the interest, and a socket that has sent and received
    /// FIN reports EPOLLHUP on every wait, even while bytes still sit unread
    /// before its FIN because the flow they go to is full. Left in the set it
    /// would wake the loop for nothing, forever (socket-proxyd disables such
    /// event sources the same way). It comes back when the other side drains.
    private func setInterest(_ wanted: EpollEvents, side: Side) {
        let registration = side == .client ? clientRegistration : upstreamRegistration
        if wanted.isEmpty {
            guard let registration else { return }
            loop.deregister(registration)
            if side == .client { clientRegistration = nil } else { upstreamRegistration = nil }
            return
        }
        guard let registration else {
            guard let fd = descriptor(side) else { return }
            guard let registration = try? loop.register(fd, interest: wanted, handler: self) else {
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
        let current = side == .client ? clientInterest : upstreamInterest
        guard wanted != current else { return }
        loop.modify(registration, interest: wanted)
        if side == .client { clientInterest = wanted } else { upstreamInterest = wanted }
    }

    // MARK: What the sweep asks

    /// The sweep's look at one socket: its TCP_INFO and, when the kernel has
    /// closed it, what SO_ERROR says, which this connection acts on at once
    /// (reading SO_ERROR clears it, so no event will tell it again). nil for a
    /// side with no TCP socket.
    func inspect(_ side: Side) -> TCPInfo? {
        guard phase == .relaying, let fd = descriptor(side), let info = try? TCPInfo.read(fd) else { return nil }
        if info.isClosed { kernelReports(side, error: Sockets.pendingError(fd)) }
        return info
    }

    /// A side failed and the connection is delivering what it still can.
    var hasFault: Bool { clientFault != nil || upstreamFault != nil }

    /// Changes whenever a byte is read or written or a flow changes state: a
    /// wake-up that leaves it as it was did nothing. Taken twice per event, so
    /// it is plain arithmetic: bytes read are `bytes + pending`.
    private var progressMark: (read: UInt64, written: UInt64, states: UInt8) {
        var states: UInt8 = hasFault ? 1 : 0
        if inbound.sourceClosed { states |= 2 }
        if inbound.finished { states |= 4 }
        if outbound.sourceClosed { states |= 8 }
        if outbound.finished { states |= 16 }
        return (
            inbound.bytes &+ UInt64(inbound.pending) &+ outbound.bytes &+ UInt64(outbound.pending),
            inbound.bytes &+ outbound.bytes, states
        )
    }

    /// Bytes a recovered connection lost inside the process before a crash
    /// (`CrashAudit`), for the `crash-loss` journal entry.
    private(set) var lostInOldProcess: UInt64 = 0

    /// A recovered connection whose stream has a hole: both sides get RST (a
    /// FIN would say the stream ended cleanly), reaped as `crash-loss`.
    func reapCrashLoss(lostBytes: UInt64) {
        guard phase != .ended else { return }
        lostInOldProcess = lostBytes
        endsWithReset = true
        if let fd = client?.raw { Sockets.abortOnClose(fd) }
        if let fd = upstream?.raw { Sockets.abortOnClose(fd) }
        end(.reaped(.crashLoss))
    }

    /// Reaps now, for `reason` (the reaper and `reaperctl reap` call this).
    func reap(_ reason: ReapReason) {
        guard phase != .ended else { return }
        end(.reaped(reason))
    }

    /// Applies a listener's new keepalive settings to live sockets (reload).
    func applySettings(_ settings: ConnectionSettings) {
        // New keepalive timing: the next sweep reads both sockets afresh.
        watch.recheckNow()
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
        // A reap's journal entry names the upstream side's port: read it while the socket is open.
        if case .reaped = end { _ = upstreamLocal }
        phase = .ended
        connectTimer?.cancel()
        connectTimer = nil
        retryTimer?.cancel()
        retryTimer = nil
        // Closing takes a socket out of the epoll set, unless systemd's store (or
        // its queue) holds a copy of it: then it must be removed explicitly.
        let stored = owner.isStored(self)
        for registration in [clientRegistration, upstreamRegistration] {
            guard let registration else { continue }
            if stored { loop.deregister(registration) } else { loop.forget(registration) }
        }
        clientRegistration = nil
        upstreamRegistration = nil
        inbound.release(pipes)
        outbound.release(pipes)
        owner.connectionClosing(self)
        client = nil
        upstream = nil
        owner.connection(self, endedWith: end)
    }
}

/// A socket address on the heap, for a connection's rarely set addresses.
final class AddressBox {
    let address: SocketAddress
    init(_ address: SocketAddress) { self.address = address }
}
