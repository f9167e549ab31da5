import Glibc
import Testing

@testable import ReaperCore

/// A named upstream's addresses are tried in order within one connect_timeout
/// (Connection.connect): the first that answers carries the connection.
@Suite struct ConnectOrderTests {
    /// A TCP port on loopback that refuses: bound, never listening, kept bound
    /// so no other test takes it meanwhile.
    private final class RefusingPort {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        init() {
            let address = SocketAddress(ip: "127.0.0.1", port: 0)!
            precondition(address.withSockaddr { Glibc.bind(fd, $0, $1) } == 0)
        }
        var address: SocketAddress { try! Sockets.localAddress(fd) }
        deinit { Glibc.close(fd) }
    }

    /// A listening socket whose accept queue is full: the kernel drops the
    /// next SYN, so a connect to it stays in progress (an unanswering host).
    private final class BlackHole {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var fillers: [Int32] = []
        init() {
            let address = SocketAddress(ip: "127.0.0.1", port: 0)!
            precondition(address.withSockaddr { Glibc.bind(fd, $0, $1) } == 0)
            precondition(Glibc.listen(fd, 0) == 0)
            let bound = try! Sockets.localAddress(fd)
            // listen(0) still queues one or two: fill it until a connect hangs.
            for _ in 0..<8 {
                let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
                _ = bound.withSockaddr { Glibc.connect(probe, $0, $1) }
                fillers.append(probe)
                var poller = pollfd(fd: probe, events: Int16(POLLOUT), revents: 0)
                if poll(&poller, 1, 100) == 0 { break }
            }
        }
        var address: SocketAddress { try! Sockets.localAddress(fd) }
        deinit {
            for filler in fillers { Glibc.close(filler) }
            Glibc.close(fd)
        }
    }

    private struct Setup {
        let loop: EventLoop
        let owner: RelayOwner
        let front: TestListener
        let clientFD: Int32
        let connection: Connection
    }

    private func setUp(
        _ addresses: [SocketAddress], connectTimeout: Duration = .seconds(5)
    ) -> Setup {
        signal(SIGPIPE, SIG_IGN)
        let loop = try! EventLoop()
        let owner = RelayOwner(loop: loop, pipes: PipePool())
        let front = TestListener(unix: false)
        let clientFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        _ = front.boundAddress.withSockaddr { Glibc.connect(clientFD, $0, $1) }
        let accepted = front.acceptOne()
        var settings = ConnectionSettings.defaults
        settings.connectTimeout = connectTimeout
        let listener = ListenerState(settings: ListenerSettings(name: "order", connection: settings))
        let connection = Connection(
            id: 1, listener: listener, client: FileDescriptor(owning: accepted),
            peer: SocketAddress(ip: "127.0.0.1", port: 1)!, upstream: addresses.first,
            alternatives: Array(addresses.dropFirst()), upstreamName: "db.test:1", owner: owner, now: loop.now)
        return Setup(loop: loop, owner: owner, front: front, clientFD: clientFD, connection: connection)
    }

    /// Runs the loop until `done()` or `limit`.
    private func run(_ loop: EventLoop, limit: Duration = .seconds(3), until done: @escaping () -> Bool) {
        let deadline = Instant.now().adding(limit)
        func poll() {
            if done() || Instant.now() >= deadline { return loop.stop() }
            loop.schedule(after: .milliseconds(2)) { poll() }
        }
        poll()
        try? loop.run()
    }

    @Test func aRefusingFirstAddressGivesWayToTheSecond() {
        let refusing = RefusingPort()
        let service = TestListener(unix: false)
        let setup = setUp([refusing.address, service.boundAddress])
        defer { Glibc.close(setup.clientFD) }
        _ = setup.connection.start()
        run(setup.loop) { setup.connection.phase != .connecting }
        #expect(setup.connection.phase == .relaying, "\(String(describing: setup.owner.ended))")
        #expect(setup.connection.upstreamAddress?.description == service.boundAddress.description)
        // Bytes reach the second address.
        let upstream = service.acceptOne()
        defer { Glibc.close(upstream) }
        _ = "ping".withCString { Glibc.send(setup.clientFD, $0, 4, 0) }
        var received = [UInt8](repeating: 0, count: 4)
        var got = 0
        run(setup.loop) {
            let n = Glibc.recv(upstream, &received, 4, Int32(MSG_DONTWAIT))
            if n > 0 { got = n }
            return got > 0
        }
        #expect(String(decoding: received.prefix(got), as: UTF8.self) == "ping")
    }

    @Test func whenEveryAddressRefusesTheLineNamesEach() {
        let first = RefusingPort()
        let second = RefusingPort()
        let setup = setUp([first.address, second.address])
        defer { Glibc.close(setup.clientFD) }
        _ = setup.connection.start()
        run(setup.loop) { setup.owner.ended != nil }
        guard case .upstreamFailed(let why)? = setup.owner.ended else {
            Issue.record("ended with \(String(describing: setup.owner.ended))")
            return
        }
        #expect(why.contains("\(first.address)") && why.contains("\(second.address)"), "\(why)")
    }

    /// An address that never answers gets its share of connect_timeout, not
    /// all of it: the next address still has time.
    @Test func anUnansweringFirstAddressLeavesTimeForTheSecond() {
        let hole = BlackHole()
        let service = TestListener(unix: false)
        let setup = setUp([hole.address, service.boundAddress], connectTimeout: .milliseconds(600))
        defer { Glibc.close(setup.clientFD) }
        let started = Instant.now()
        _ = setup.connection.start()
        run(setup.loop) { setup.connection.phase != .connecting }
        let took = Instant.now().since(started)
        #expect(setup.connection.phase == .relaying, "\(String(describing: setup.owner.ended))")
        #expect(setup.connection.upstreamAddress?.description == service.boundAddress.description)
        #expect(took >= .milliseconds(250) && took < .milliseconds(600), "\(took)")
    }

    @Test func oneAddressKeepsTheWholeTimeout() {
        let hole = BlackHole()
        let setup = setUp([hole.address], connectTimeout: .milliseconds(400))
        defer { Glibc.close(setup.clientFD) }
        let started = Instant.now()
        _ = setup.connection.start()
        run(setup.loop) { setup.owner.ended != nil }
        let took = Instant.now().since(started)
        guard case .upstreamFailed(let why)? = setup.owner.ended else {
            Issue.record("ended with \(String(describing: setup.owner.ended))")
            return
        }
        #expect(why.contains("timed out after 400ms"), "\(why)")
        #expect(took >= .milliseconds(380), "\(took)")
    }
}
