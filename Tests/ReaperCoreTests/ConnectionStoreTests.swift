import Glibc
import Testing

@testable import ReaperCore

/// The descriptor store's bookkeeping, driven from inside with real loopback
/// sockets and a channel that records what would go to PID 1.
@Suite(.serialized) struct ConnectionStoreTests {
    /// What the store asked of PID 1.
    final class RecordingChannel: DescriptorStore {
        var stores: [(name: String, descriptors: [Int32])] = []
        var removals: [String] = []
        var refuse = false
        func store(_ descriptors: [Int32], name: String) -> Bool {
            guard !refuse else { return false }
            stores.append((name, descriptors))
            return true
        }
        func remove(name: String) { removals.append(name) }
        func attach(to loop: EventLoop) {}
        var isFlushed: Bool { true }
    }

    final class Captured: LogSink {
        var records: [LogRecord] = []
        func write(_ record: LogRecord) { records.append(record) }
    }

    /// A relayed connection's two sockets as reaperd holds them: the client side
    /// accepted on one listener, the upstream side connected to another.
    final class LivePair {
        let front = TestListener(unix: false)
        let back = TestListener(unix: false)
        let clientPeer: Int32
        let upstreamPeer: Int32
        let client: Int32
        let upstream: Int32

        init() {
            let clientPeer = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            _ = front.boundAddress.withSockaddr { Glibc.connect(clientPeer, $0, $1) }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            _ = back.boundAddress.withSockaddr { Glibc.connect(upstream, $0, $1) }
            self.clientPeer = clientPeer
            self.upstream = upstream
            client = front.acceptOne()
            upstreamPeer = back.acceptOne()
        }

        deinit {
            Glibc.close(clientPeer)
            Glibc.close(upstreamPeer)
        }
    }

    let loop: EventLoop
    let owner: RelayOwner
    let channel = RecordingChannel()
    let log = Captured()

    init() {
        loop = try! EventLoop()
        owner = RelayOwner(loop: loop, pipes: PipePool())
    }

    func makeStore(capacity: Int?) -> ConnectionStore {
        ConnectionStore(channel: channel, capacity: capacity, logger: Logger(level: .debug, sink: log))
    }

    /// A relaying connection over `pair` (it owns both sockets from here on).
    func connection(_ id: UInt64, _ pair: LivePair, echo: Bool = false) -> Connection {
        let listener = ListenerState(
            settings: ListenerSettings(name: "pg", mode: echo ? .echo : .relay, connection: ConnectionSettings()))
        let peer = try! Sockets.peerAddress(pair.client)
        let upstream: FileDescriptor? = echo ? nil : FileDescriptor(owning: pair.upstream)
        if echo { Glibc.close(pair.upstream) }
        let connection = Connection(
            recoveredID: id, listener: listener, client: FileDescriptor(owning: pair.client), peer: peer,
            upstream: upstream, upstreamAddress: echo ? nil : pair.back.boundAddress, acceptedAt: nil, owner: owner,
            now: loop.now)
        #expect(connection.resume())
        return connection
    }

    @Test func bothSocketsTravelInOneMessageAndLeaveInOne() {
        let store = makeStore(capacity: 100)
        let pair = LivePair()
        let relayed = connection(7, pair)
        store.store(relayed, now: loop.now)
        #expect(channel.stores.count == 1)
        #expect(channel.stores.first?.descriptors == [pair.client, pair.upstream])
        #expect(store.held == 2 && store.isStored(relayed))
        guard case .connection(let id, let listener, _, let ports) = StoredName(parsing: channel.stores[0].name) else {
            Issue.record("not a pair name: \(channel.stores[0].name)")
            return
        }
        #expect(id == 7 && listener == "pg")
        #expect(ports.local == pair.front.boundAddress.port)
        #expect(ports.peer == (try! Sockets.localAddress(pair.clientPeer)).port)

        // Storing twice sends nothing more.
        store.store(relayed, now: loop.now)
        #expect(channel.stores.count == 1 && store.held == 2)

        store.unstore(relayed)
        #expect(channel.removals == [channel.stores[0].name])
        #expect(store.held == 0 && !store.isStored(relayed))
        store.unstore(relayed)
        #expect(channel.removals.count == 1, "a name is removed exactly once")
        relayed.end(.closed)
    }

    /// A pair needs room for both descriptors: with one left it is not stored at
    /// all (systemd 252 would keep the first and close the second).
    @Test func capacityCountsDescriptorsAndNeverSplitsAPair() {
        let store = makeStore(capacity: 3)
        let first = connection(1, LivePair())
        let second = connection(2, LivePair())
        let echo = connection(3, LivePair(), echo: true)
        store.store(first, now: loop.now)
        store.store(second, now: loop.now)
        #expect(store.held == 2 && !store.isStored(second) && store.skipped == 1)
        #expect(log.records.contains { $0.message.contains("store full") })
        store.store(echo, now: loop.now)
        #expect(store.held == 3 && store.isStored(echo))
        #expect(channel.stores.last?.descriptors.count == 1)
        store.unstore(first)
        store.store(second, now: loop.now)
        #expect(store.held == 3 && store.isStored(second))
        for connection in [first, second, echo] { connection.end(.closed) }
    }

    @Test func aChannelThatCannotDuplicateStoresNothing() {
        let store = makeStore(capacity: 100)
        channel.refuse = true
        let relayed = connection(1, LivePair())
        store.store(relayed, now: loop.now)
        #expect(!store.isStored(relayed) && store.held == 0 && store.skipped == 1)
        relayed.end(.closed)
    }

    @Test func theSweepStoresOnlyConnectionsOlderThanTheMinimumAge() {
        let store = makeStore(capacity: 100)
        let relayed = connection(1, LivePair())
        store.storeIfDue(relayed, now: loop.now, minimumAge: .seconds(2))
        #expect(!store.isStored(relayed))
        store.storeIfDue(relayed, now: loop.now.adding(.seconds(2)), minimumAge: .seconds(2))
        #expect(store.isStored(relayed))
        relayed.end(.closed)
    }

    @Test func withoutCapacityNothingNewIsStored() {
        let store = makeStore(capacity: nil)
        let relayed = connection(1, LivePair())
        store.store(relayed, now: loop.now)
        #expect(channel.stores.isEmpty && !store.isEnabled)
        relayed.end(.closed)
    }

    /// systemd hands a name's descriptors back in no set order: the recorded
    /// client ports tell the sides apart either way round.
    @Test func aPairComesBackWithItsSidesToldApart() {
        for upstreamFirst in [false, true] {
            let store = makeStore(capacity: 100)
            let pair = LivePair()
            let ports = StoredName.ClientPorts(
                local: pair.front.boundAddress.port, peer: (try! Sockets.localAddress(pair.clientPeer)).port)
            let name = StoredName.connection(id: 9, listener: "pg", acceptedAtMilliseconds: 1234, client: ports).text
            let sockets = [
                ActivatedSocket(name: name, descriptor: pair.client),
                ActivatedSocket(name: name, descriptor: pair.upstream),
            ]
            let unit = ActivatedSocket(name: "pg", descriptor: dup(pair.front.fd))
            let fromUnit = store.receive([unit] + (upstreamFirst ? sockets.reversed() : sockets))
            #expect(fromUnit.map(\.name) == ["pg"])
            Glibc.close(unit.descriptor)
            let recovered = store.takeRecovered()
            #expect(recovered.count == 1)
            #expect(recovered.first?.client == pair.client && recovered.first?.upstream == pair.upstream)
            #expect(recovered.first?.acceptedAt == Instant(nanoseconds: 1_234_000_000))
            #expect(store.held == 2)
            for stored in recovered { store.discard(stored) }
            #expect(channel.removals.last == name && store.held == 0)
        }
    }

    /// Names an older reaperd stored side by side still come back as one pair,
    /// and leave the store under both names.
    @Test func olderSideBySideNamesAreRecoveredAndRemovedTogether() {
        let store = makeStore(capacity: 100)
        let pair = LivePair()
        _ = store.receive([
            ActivatedSocket(name: "u@4@pg", descriptor: pair.upstream),
            ActivatedSocket(name: "c@4@pg@99", descriptor: pair.client),
        ])
        let recovered = store.takeRecovered()
        #expect(recovered.count == 1 && recovered.first?.client == pair.client)
        guard let stored = recovered.first else { return }
        let listener = ListenerState(settings: ListenerSettings(name: "pg", mode: .relay, connection: .init()))
        let adopted = Connection(
            recoveredID: stored.id, listener: listener, client: FileDescriptor(owning: stored.client),
            peer: try! Sockets.peerAddress(stored.client), upstream: FileDescriptor(owning: pair.upstream),
            upstreamAddress: pair.back.boundAddress, acceptedAt: stored.acceptedAt, owner: owner, now: loop.now)
        store.adopted(stored, by: adopted)
        #expect(store.isStored(adopted) && store.held == 2)
        store.unstore(adopted)
        #expect(Set(channel.removals) == ["u@4@pg", "c@4@pg@99"] && store.held == 0)
        adopted.end(.closed)
    }

    /// What cannot be used is closed and removed, never adopted and never a
    /// failure: an unreadable name, a listening socket under a connection's name,
    /// three sockets under one name, an id seen twice.
    @Test func unusableStoredSocketsAreDroppedAndRemoved() {
        let store = makeStore(capacity: 100)
        let a = LivePair()
        let b = LivePair()
        let listening = dup(a.front.fd)
        let ports = StoredName.ClientPorts(local: 1, peer: 2)
        let triple = StoredName.connection(id: 5, listener: "pg", acceptedAtMilliseconds: 0, client: ports).text
        let wrongKind = StoredName.connection(id: 6, listener: "pg", acceptedAtMilliseconds: 0, client: ports).text
        let echoName = StoredName.connection(id: 8, listener: "pg", acceptedAtMilliseconds: 0, client: ports).text
        let fromUnit = store.receive([
            ActivatedSocket(name: "c@18446744073709551615@pg", descriptor: a.client),
            ActivatedSocket(name: wrongKind, descriptor: listening),
            ActivatedSocket(name: triple, descriptor: a.upstream),
            ActivatedSocket(name: triple, descriptor: b.client),
            ActivatedSocket(name: triple, descriptor: dup(b.upstream)),
            // Id 8 twice: an echo pair and an older client name.
            ActivatedSocket(name: echoName, descriptor: b.upstream),
            ActivatedSocket(name: "c@8@pg", descriptor: dup(b.upstream)),
        ])
        #expect(fromUnit.isEmpty)
        let recovered = store.takeRecovered()
        #expect(recovered.count == 1 && recovered.first?.id == 8)
        #expect(Set(channel.removals) == ["c@18446744073709551615@pg", wrongKind, triple, "c@8@pg"])
        #expect(store.held == 1)
        #expect(fcntl(a.client, F_GETFD) == -1 && fcntl(listening, F_GETFD) == -1, "dropped sockets are closed")
        #expect(log.records.filter { $0.message.contains("removed from the store") }.count == 4)
        for stored in recovered { store.discard(stored) }
        #expect(store.held == 0)
    }
}
