import Glibc

@testable import ReaperCore

// An in-process relay: one real `Connection` on a real `EventLoop`, between two
// scripted peers on the same loop, over loopback TCP (client side) and TCP or
// Unix (upstream side). The peers write a known byte stream and check every
// byte they read, so a lost, duplicated or reordered byte fails the case; the
// reaper's own sweep runs every few milliseconds, so a wrong reap fails it too.

/// The bytes every stream is cut from: a prime-length table of pseudo-random
/// bytes, so a hole or a repeat shows unless it is a multiple of a megabyte.
let relayPattern: [UInt8] = {
    var rng = SplitMix64(seed: 0x5eed)
    let table = (0..<RelayStream.period).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    // The first bytes again past the end, so a read across the wrap is one slice.
    return table + table[0..<65536]
}()

/// One direction's byte stream: byte `i` is `relayPattern[(start + i) % period]`.
struct RelayStream {
    static let period = 1_000_003
    let start: Int

    init(seed: UInt64, direction: Int) {
        start = Int((seed &* 0x9E37_79B9 &+ UInt64(direction) &* 7919) % UInt64(Self.period))
    }

    /// Calls `body` with the stream's bytes at `offset`, at most `count` of them
    /// (fewer where the table wraps).
    func withBytes<R>(at offset: Int, count: Int, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        let index = (start + offset) % Self.period
        let length = min(count, relayPattern.count - index)
        return relayPattern.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[index..<index + length])) }
    }

    /// Whether `received` is the stream's bytes from `offset` on.
    func matches(_ received: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        var checked = 0
        while checked < received.count {
            let equal = withBytes(at: offset + checked, count: received.count - checked) { expected in
                memcmp(expected.baseAddress!, received.baseAddress! + checked, expected.count) == 0
                    ? expected.count : -1
            }
            if equal < 0 { return false }
            checked += equal
        }
        return true
    }
}

struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What one peer does: how much it sends and how, how it reads, how it ends.
struct PeerScript: CustomStringConvertible {
    enum Reading: CustomStringConvertible {
        /// Reads whenever epoll says so.
        case eager
        /// Reads up to `bytes` every `everyMilliseconds`, never more.
        case slow(bytes: Int, everyMilliseconds: Int)
        var description: String {
            switch self {
            case .eager: "eager"
            case .slow(let bytes, let ms): "slow(\(bytes)B/\(ms)ms)"
            }
        }
    }

    enum Ending: CustomStringConvertible {
        /// Sends everything, waits `afterMilliseconds`, half-closes, reads to EOF.
        case fin(afterMilliseconds: Int)
        /// Closes with RST (SO_LINGER 0) once `afterBytes` are sent.
        case reset(afterBytes: Int)
        var description: String {
            switch self {
            case .fin(let ms): "fin(+\(ms)ms)"
            case .reset(let bytes): "reset(@\(bytes))"
            }
        }
    }

    var sends = 0
    /// Largest single write.
    var chunk = 64 * 1024
    var reading = Reading.eager
    /// Reading stops for `milliseconds` once `offset` bytes have arrived.
    var readPauses: [(offset: Int, milliseconds: Int)] = []
    /// Writing stops for `milliseconds` once `offset` bytes are sent.
    var writePauses: [(offset: Int, milliseconds: Int)] = []
    var ending = Ending.fin(afterMilliseconds: 0)
    /// SO_RCVBUF / SO_SNDBUF, when set (small ones make every buffer fill).
    var receiveBuffer: Int?
    var sendBuffer: Int?

    var resets: Bool { if case .reset = ending { true } else { false } }

    var description: String {
        "sends \(sends) in \(chunk)B writes, reads \(reading), read pauses \(readPauses.map { "\($0.offset):\($0.milliseconds)ms" }), "
            + "write pauses \(writePauses.map { "\($0.offset):\($0.milliseconds)ms" }), ends \(ending), "
            + "rcvbuf \(receiveBuffer.map(String.init) ?? "-"), sndbuf \(sendBuffer.map(String.init) ?? "-")"
    }
}

/// One scripted end of the relay, driven by the loop it shares with the relay.
final class ScriptedPeer: EventHandler {
    let name: String
    let script: PeerScript
    let sending: RelayStream
    let expecting: RelayStream
    private let loop: EventLoop
    private(set) var fd: Int32
    private var registration: Registration?
    private var interest: EpollEvents = []

    private(set) var sent = 0
    private(set) var received = 0
    private(set) var sawEOF = false
    /// A read or write failed with ECONNRESET or EPIPE: the relay passed a reset on.
    private(set) var sawReset = false
    private(set) var corrupt: String?
    private(set) var finSent = false
    private(set) var closed = false
    /// Peer system calls that moved bytes or changed state: the yardstick a
    /// relay's wake-ups are measured against.
    private(set) var operations = 0
    private var readPausedUntilTimer = false
    private var writePausedUntilTimer = false
    private var finScheduled = false
    private var readPauseIndex = 0
    private var writePauseIndex = 0
    private var slowTimer: LoopTimer?
    private var buffer = [UInt8](repeating: 0, count: 256 * 1024)
    var onChange: () -> Void = {}
    /// Told true when a read pause starts and false when it ends.
    var onReadPause: (Bool) -> Void = { _ in }

    init(name: String, fd: Int32, script: PeerScript, sending: RelayStream, expecting: RelayStream, loop: EventLoop) {
        self.name = name
        self.fd = fd
        self.script = script
        self.sending = sending
        self.expecting = expecting
        self.loop = loop
        if let size = script.receiveBuffer { setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(size)) }
        if let size = script.sendBuffer { setOption(fd, SOL_SOCKET, SO_SNDBUF, Int32(size)) }
        // As real clients of a relay do (and as reaperd does): with Nagle and
        // delayed ACKs, tiny buffers would stall 40 ms a round for nothing.
        setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    }

    var done: Bool {
        if closed { return true }
        return false
    }

    func start() {
        if case .slow(_, let every) = script.reading {
            func tick() {
                guard !closed else { return }
                readSome()
                progress()
                guard !closed else { return }
                slowTimer = loop.schedule(after: .milliseconds(Int64(every))) { tick() }
            }
            tick()
        }
        progress()
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        if !events.isDisjoint(with: [.readable, .readHangup, .hangup, .error]), case .eager = script.reading {
            readSome()
        }
        progress()
    }

    /// Writes what it may, ends when its script says, and re-arms epoll.
    private func progress() {
        guard !closed else { return }
        writeSome()
        guard !closed else { return }
        if sent == script.sends && !finSent && !finScheduled && !sawReset, case .fin(let delay) = script.ending {
            finScheduled = true
            loop.schedule(after: .milliseconds(Int64(delay))) { [self] in
                guard !closed, !sawReset else { return }
                finSent = true
                operations += 1
                _ = shutdown(fd, Int32(SHUT_WR))
                progress()
            }
        }
        if (sawEOF || sawReset) && (finSent || sawReset || script.resets) {
            // Nothing more to read or write; a resetting peer resets even now.
            return close(abort: script.resets)
        }
        var wanted: EpollEvents = []
        if case .eager = script.reading, !readPausedUntilTimer, !sawEOF { wanted.formUnion([.readable, .readHangup]) }
        if sent < script.sends && !writePausedUntilTimer && !sawReset { wanted.insert(.writable) }
        arm(wanted)
        onChange()
    }

    private func writeSome() {
        while sent < script.sends && !writePausedUntilTimer && !sawReset {
            if case .reset(let after) = script.ending, sent >= after { return close(abort: true) }
            if writePauseIndex < script.writePauses.count, sent >= script.writePauses[writePauseIndex].offset {
                let pause = script.writePauses[writePauseIndex].milliseconds
                writePauseIndex += 1
                writePausedUntilTimer = true
                loop.schedule(after: .milliseconds(Int64(pause))) { [self] in
                    writePausedUntilTimer = false
                    progress()
                }
                return
            }
            var limit = min(script.chunk, script.sends - sent)
            if case .reset(let after) = script.ending { limit = min(limit, max(after - sent, 1)) }
            if writePauseIndex < script.writePauses.count {
                limit = min(limit, max(script.writePauses[writePauseIndex].offset - sent, 1))
            }
            let written = sending.withBytes(at: sent, count: limit) { bytes in
                Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
            if written < 0 {
                let code = errno
                if code == EAGAIN || code == EINTR { return }
                if code == EPIPE || code == ECONNRESET {
                    sawReset = true
                    return
                }
                corrupt = "\(name): send failed: \(Errno(code))"
                return
            }
            sent += written
            operations += 1
        }
        if case .reset(let after) = script.ending, sent >= after { close(abort: true) }
    }

    private func readSome() {
        guard !closed, !sawEOF, !readPausedUntilTimer else { return }
        var budget = Int.max
        if case .slow(let bytes, _) = script.reading { budget = bytes }
        while budget > 0 {
            if readPauseIndex < script.readPauses.count, received >= script.readPauses[readPauseIndex].offset {
                let pause = script.readPauses[readPauseIndex].milliseconds
                readPauseIndex += 1
                readPausedUntilTimer = true
                onReadPause(true)
                loop.schedule(after: .milliseconds(Int64(pause))) { [self] in
                    readPausedUntilTimer = false
                    onReadPause(false)
                    if case .eager = script.reading { readSome() }
                    progress()
                }
                return
            }
            var limit = min(buffer.count, budget)
            if readPauseIndex < script.readPauses.count {
                limit = min(limit, max(script.readPauses[readPauseIndex].offset - received, 1))
            }
            let count = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, limit, Int32(MSG_DONTWAIT)) }
            if count < 0 {
                let code = errno
                if code == EAGAIN || code == EINTR { return }
                if code == ECONNRESET || code == EPIPE {
                    sawReset = true
                    operations += 1
                    return
                }
                corrupt = "\(name): recv failed: \(Errno(code))"
                return
            }
            operations += 1
            if count == 0 {
                sawEOF = true
                return
            }
            let ok = buffer.withUnsafeBytes {
                expecting.matches(UnsafeRawBufferPointer(rebasing: $0[0..<count]), at: received)
            }
            if !ok && corrupt == nil {
                corrupt = "\(name): bytes at offset \(received)..<\(received + count) differ from what was sent"
            }
            received += count
            budget -= count
        }
    }

    private func arm(_ wanted: EpollEvents) {
        if wanted.isEmpty {
            if let registration { loop.deregister(registration) }
            registration = nil
            interest = []
            return
        }
        if let registration {
            if wanted != interest { loop.modify(registration, interest: wanted) }
        } else {
            registration = try? loop.register(fd, interest: wanted, handler: self)
        }
        interest = wanted
    }

    func close(abort: Bool) {
        guard !closed else { return }
        if let registration { loop.deregister(registration) }
        registration = nil
        slowTimer?.cancel()
        // The timer's action holds this peer: let go of it.
        slowTimer = nil
        if abort {
            var value = linger(l_onoff: 1, l_linger: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &value, socklen_t(MemoryLayout<linger>.size))
        }
        Glibc.close(fd)
        closed = true
        operations += 1
        onChange()
    }
}

func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
    var value = value
    _ = setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
}

/// The daemon's side of a connection, reduced to what `Connection` needs.
final class RelayOwner: ConnectionOwner {
    let loop: EventLoop
    let pipes: PipePool
    private(set) var ended: ConnectionEnd?
    private(set) var endedAt: Instant?
    var onEnd: () -> Void = {}

    init(loop: EventLoop, pipes: PipePool) {
        self.loop = loop
        self.pipes = pipes
    }

    func connectionEstablished(_ connection: Connection) {}
    func connectionClosing(_ connection: Connection) {}
    func isStored(_ connection: Connection) -> Bool { false }
    /// The harness's own sweep reads every connection every round.
    func sweepSoon(_ connection: Connection) {}
    func connection(_ connection: Connection, endedWith end: ConnectionEnd) {
        ended = end
        endedAt = Instant.now()
        onEnd()
    }
}

enum UpstreamKind: CustomStringConvertible {
    case tcp, unix, echo
    var description: String {
        switch self {
        case .tcp: "tcp"
        case .unix: "unix"
        case .echo: "echo"
        }
    }
}

/// A listening socket for the test, on loopback or a fresh Unix path.
final class TestListener {
    let fd: Int32
    let address: SocketAddress
    let path: String?

    init(unix: Bool) {
        if unix {
            let path = "/tmp/reaperd-relay-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
            unlink(path)
            fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            address = SocketAddress(unixPath: path)!
            self.path = path
        } else {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            address = SocketAddress(ip: "127.0.0.1", port: 0)!
            path = nil
        }
        precondition(fd >= 0)
        let bound = address.withSockaddr { Glibc.bind(fd, $0, $1) }
        precondition(bound == 0, "bind: \(Errno(errno))")
        precondition(Glibc.listen(fd, 64) == 0)
    }

    var boundAddress: SocketAddress { (try? Sockets.localAddress(fd)) ?? address }

    /// Waits (bounded) for one connection and returns it.
    func acceptOne() -> Int32 {
        for _ in 0..<2000 {
            if case .processed(let accepted) = try! Sockets.accept(fd) { return accepted.release() }
            usleep(1000)
        }
        preconditionFailure("nothing connected within 2 s")
    }

    deinit {
        Glibc.close(fd)
        if let path { unlink(path) }
    }
}

/// One relay case, set up and run to its end or its deadline.
struct RelayCase: CustomStringConvertible {
    var seed: UInt64 = 0
    var upstream = UpstreamKind.tcp
    var splice = true
    var pipeCapacity = 256 * 1024
    var client = PeerScript()
    var server = PeerScript()
    var settings = ConnectionSettings(halfCloseTimeout: .milliseconds(1500))
    /// How often the reaper's sweep runs against the connection.
    var sweepEvery = Duration.milliseconds(10)
    /// SO_SNDBUF on the relay's own client socket: small, the answer waits in
    /// the relay instead of in a kernel queue grown to megabytes.
    var relaySendBuffer: Int?
    /// The same on the relay's upstream socket.
    var upstreamSendBuffer: Int?
    var deadline = Duration.seconds(30)

    var description: String {
        "seed \(seed): upstream \(upstream), splice \(splice), pipe \(pipeCapacity)B\n  client: \(client)\n  server: \(server)"
    }

    struct Outcome {
        var failures: [String] = []
        var end: ConnectionEnd?
        var wakeups: UInt64 = 0
        var idleWakeups: UInt64 = 0
        /// Wake-ups that moved nothing while the client was not reading.
        var idleWakeupsWhileClientPaused: UInt64 = 0
        var peerOperations = 0
        /// Bytes the client peer read.
        var clientReceived = 0
        var seconds = 0.0
        /// From the start of the case to the connection's end.
        var endedAfter: Double?
        /// Pipes the relay made: none while every flow copies.
        var pipesCreated = 0
    }

    /// Runs the case on a loop of its own and checks every promise the relay makes.
    func run() -> Outcome {
        // splice(2) into a reset socket raises SIGPIPE; reaperd ignores it (Signals).
        signal(SIGPIPE, SIG_IGN)
        var outcome = Outcome()
        let started = Instant.now()
        let loop = try! EventLoop()
        let pool = PipePool(pipeCapacity: pipeCapacity, maxInUse: splice ? .max : 0)
        let owner = RelayOwner(loop: loop, pipes: pool)
        let front = TestListener(unix: false)
        let back: TestListener? = upstream == .echo ? nil : TestListener(unix: upstream == .unix)

        // The client connects to the front listener; the accepted socket is what
        // a listener would hand the relay.
        let clientFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        if let size = client.receiveBuffer { setOption(clientFD, SOL_SOCKET, SO_RCVBUF, Int32(size)) }
        _ = front.boundAddress.withSockaddr { Glibc.connect(clientFD, $0, $1) }
        let relayClient = front.acceptOne()
        // What the listening socket would have passed on (SocketOptions).
        setOption(relayClient, SOL_SOCKET, SO_KEEPALIVE, 1)
        setOption(relayClient, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
        if let size = relaySendBuffer { setOption(relayClient, SOL_SOCKET, SO_SNDBUF, Int32(size)) }

        var settings = settings
        settings.upstreamKeepalive = upstream == .tcp
        let listener = ListenerState(
            settings: ListenerSettings(
                name: "case", mode: upstream == .echo ? .echo : .relay, connection: settings))
        let connection = Connection(
            id: 1, listener: listener, client: FileDescriptor(owning: relayClient),
            peer: SocketAddress(ip: "127.0.0.1", port: 1)!, upstream: back?.boundAddress, owner: owner,
            now: loop.now)

        let clientPeer = ScriptedPeer(
            name: "client", fd: clientFD, script: client, sending: RelayStream(seed: seed, direction: 0),
            expecting: RelayStream(seed: seed, direction: upstream == .echo ? 0 : 1), loop: loop)
        var serverPeer: ScriptedPeer?
        var finished = false
        func check() {
            guard !finished else { return }
            if clientPeer.done && (serverPeer?.done ?? true) && owner.ended != nil {
                finished = true
                loop.stop()
            }
        }
        clientPeer.onChange = check
        var idleAtPause: UInt64 = 0
        clientPeer.onReadPause = { starting in
            if starting {
                idleAtPause = connection.idleWakeups
            } else {
                outcome.idleWakeupsWhileClientPaused += connection.idleWakeups - idleAtPause
            }
        }
        owner.onEnd = check
        _ = connection.start()
        if let size = upstreamSendBuffer, let fd = connection.upstreamDescriptor {
            setOption(fd, SOL_SOCKET, SO_SNDBUF, Int32(size))
        }
        if let back {
            if let size = server.receiveBuffer { setOption(back.fd, SOL_SOCKET, SO_RCVBUF, Int32(size)) }
            let serverFD = back.acceptOne()
            let peer = ScriptedPeer(
                name: "server", fd: serverFD, script: server, sending: RelayStream(seed: seed, direction: 1),
                expecting: RelayStream(seed: seed, direction: 0), loop: loop)
            peer.onChange = check
            serverPeer = peer
        }

        func sweep() {
            guard !finished else { return }
            _ = Reaper.examine(connection, now: Instant.now())
            loop.schedule(after: sweepEvery) { sweep() }
        }
        loop.schedule(after: sweepEvery) { sweep() }
        loop.schedule(after: deadline) {
            outcome.failures.append("deadline \(deadline) passed")
            finished = true
            loop.stop()
        }
        clientPeer.start()
        serverPeer?.start()
        try! loop.run()

        outcome.end = owner.ended
        outcome.wakeups = connection.wakeups
        outcome.idleWakeups = connection.idleWakeups
        outcome.peerOperations = clientPeer.operations + (serverPeer?.operations ?? 0)
        outcome.clientReceived = clientPeer.received
        outcome.pipesCreated = pool.created
        outcome.seconds = Instant.now().since(started).secondsAsDouble
        outcome.endedAfter = owner.endedAt.map { $0.since(started).secondsAsDouble }
        outcome.failures += verify(client: clientPeer, server: serverPeer, connection: connection, owner: owner)
        if owner.ended == nil { connection.end(.shutdown) }
        clientPeer.close(abort: true)
        serverPeer?.close(abort: true)
        // Break the cycles through the closures (LeakSanitizer counts them).
        clientPeer.onChange = {}
        clientPeer.onReadPause = { _ in }
        serverPeer?.onChange = {}
        owner.onEnd = {}
        loop.discardPending()
        return outcome
    }

    /// Each direction delivers exactly the bytes sent, in order; FIN and RST pass
    /// on; nothing is reaped; the loop never wakes the relay for nothing.
    private func verify(client: ScriptedPeer, server: ScriptedPeer?, connection: Connection, owner: RelayOwner)
        -> [String]
    {
        var failures: [String] = []
        for peer in [client, server].compactMap({ $0 }) {
            if let corrupt = peer.corrupt { failures.append(corrupt) }
        }
        if owner.ended != .closed {
            failures.append("connection ended \(owner.ended.map { "\($0)" } ?? "never"), not closed")
        }
        let resetter = self.client.resets ? client : (self.server.resets ? server : nil)
        if upstream == .echo {
            if !self.client.resets {
                if client.received != client.sent {
                    failures.append("echo returned \(client.received) of \(client.sent) bytes")
                }
                if !client.sawEOF { failures.append("client never saw the echo's EOF") }
            }
        } else if let server {
            let pairs = [(from: client, to: server), (from: server, to: client)]
            for (from, to) in pairs {
                if resetter == nil {
                    if to.received != from.sent {
                        failures.append(
                            "\(to.name) received \(to.received) of the \(from.sent) bytes \(from.name) sent")
                    }
                    if !to.sawEOF { failures.append("\(to.name) never saw EOF") }
                    if to.sawReset { failures.append("\(to.name) saw a reset nobody sent") }
                } else if from === resetter {
                    if to.received > from.sent { failures.append("\(to.name) received more than \(from.name) sent") }
                    // A Unix socket has no RST: its end of a reset is an end-of-file.
                    let unixEnd = upstream == .unix && (from === server || to === server)
                    if !to.sawReset && !(unixEnd && to.sawEOF) {
                        failures.append(
                            "\(from.name) reset, but \(to.name) saw \(to.sawEOF ? "a clean EOF" : "nothing")")
                    }
                }
            }
        }
        if resetter == nil && connection.endsWithReset { failures.append("the relay reset a connection nobody reset") }
        // A busy loop is wake-ups that move nothing; an honest relay has a few
        // (a hang-up reported with the last bytes, a writable edge racing a drain).
        // (The most 2000 seeds showed: 10 of 653.)
        let idleBound = 16 + connection.wakeups / 8
        if connection.idleWakeups > idleBound {
            failures.append(
                "\(connection.idleWakeups) of \(connection.wakeups) wake-ups moved nothing (bound \(idleBound))")
        }
        let peerOperations = UInt64(client.operations + (server?.operations ?? 0))
        let wakeBound = 64 + 4 * peerOperations
        if connection.wakeups > wakeBound {
            failures.append("\(connection.wakeups) wake-ups for \(peerOperations) peer operations (bound \(wakeBound))")
        }
        return failures
    }
}
