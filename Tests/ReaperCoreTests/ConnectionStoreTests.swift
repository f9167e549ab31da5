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

    func makeStore(capacity: Int?, nameBudget: Int = ConnectionStore.nameBudget) -> ConnectionStore {
        ConnectionStore(
            channel: channel, capacity: capacity, logger: Logger(level: .debug, sink: log), nameBudget: nameBudget)
    }

    /// A relaying connection over `pair` (it owns both sockets from here on).
    func connection(_ id: UInt64, _ pair: LivePair, echo: Bool = false, acceptedAt: Instant? = nil) -> Connection {
        let listener = ListenerState(
            settings: ListenerSettings(name: "pg", mode: echo ? .echo : .relay, connection: ConnectionSettings()))
        let peer = try! Sockets.peerAddress(pair.client)
        let upstream: FileDescriptor? = echo ? nil : FileDescriptor(owning: pair.upstream)
        if echo { Glibc.close(pair.upstream) }
        let connection = Connection(
            recoveredID: id, listener: listener, client: FileDescriptor(owning: pair.client), peer: peer,
            upstream: upstream, upstreamAddress: echo ? nil : pair.back.boundAddress, acceptedAt: acceptedAt,
            owner: owner, now: loop.now)
        #expect(connection.resume())
        return connection
    }

    /// What systemd would pass back after a restart: every stored name once per
    /// descriptor, each a fresh duplicate, in the order given.
    func passedBack(_ order: (Int, Int) -> Bool = { $0 < $1 }) -> [ActivatedSocket] {
        var sockets: [ActivatedSocket] = []
        for (name, descriptors) in channel.stores where !channel.removals.contains(name) {
            for fd in descriptors { sockets.append(ActivatedSocket(name: name, descriptor: dup(fd))) }
        }
        return sockets.enumerated().sorted { order($0.offset, $1.offset) }.map(\.element)
    }

    /// Both sockets go in one message under one short name, after the ledger;
    /// they come back told apart (in either order), with listener and age; the
    /// name leaves in one removal, exactly once.
    @Test func aPairTravelsInOneMessageAndComesBackWhole() {
        let store = makeStore(capacity: 100)
        let pair = LivePair()
        let accepted = Instant(nanoseconds: loop.now.nanoseconds - 5_000_000_000)
        let relayed = connection(7, pair, acceptedAt: accepted)
        store.store(relayed, now: loop.now)
        #expect(channel.stores.map(\.name) == [StoredName.ledgerName, "@7"])
        #expect(channel.stores.last?.descriptors == [pair.client, pair.upstream])
        #expect(store.held == 3 && store.isStored(relayed))
        #expect(store.nameBytes == StoredName.ledgerName.utf8.count + 1 + 2 * 3)
        store.store(relayed, now: loop.now)
        #expect(channel.stores.count == 2 && store.held == 3, "storing twice sends nothing more")

        for upstreamFirst in [false, true] {
            let next = makeStore(capacity: 100)
            #expect(next.receive(passedBack { upstreamFirst ? $0 > $1 : $0 < $1 }).isEmpty)
            let recovered = next.takeRecovered()
            #expect(recovered.count == 1)
            guard let back = recovered.first else { continue }
            #expect(back.id == 7 && back.listener == "pg")
            #expect(back.acceptedAt.map { $0.nanoseconds / 1_000_000 } == accepted.nanoseconds / 1_000_000)
            #expect((try? Sockets.localAddress(back.client))?.port == pair.front.boundAddress.port)
            #expect((try? Sockets.peerAddress(back.upstream ?? -1))?.port == pair.back.boundAddress.port)
            for stored in recovered { Glibc.close(stored.client) }
            if let upstream = back.upstream { Glibc.close(upstream) }
        }

        store.unstore(relayed)
        #expect(channel.removals == ["@7"])
        #expect(store.held == 1 && !store.isStored(relayed))
        store.unstore(relayed)
        #expect(channel.removals.count == 1, "a name is removed exactly once")
        relayed.end(.closed)
    }

    /// A pair needs room for both descriptors: with one left it is not stored at
    /// all (systemd 252 would keep the first and close the second). The ledger
    /// takes one.
    @Test func capacityCountsDescriptorsAndNeverSplitsAPair() {
        let store = makeStore(capacity: 4)
        let first = connection(1, LivePair())
        let second = connection(2, LivePair())
        let echo = connection(3, LivePair(), echo: true)
        store.store(first, now: loop.now)
        store.store(second, now: loop.now)
        #expect(store.held == 3 && !store.isStored(second) && store.skipped == 1)
        #expect(log.records.contains { $0.message.contains("store full") })
        store.store(echo, now: loop.now)
        #expect(store.held == 4 && store.isStored(echo))
        #expect(channel.stores.last?.descriptors.count == 1)
        store.unstore(first)
        store.store(second, now: loop.now)
        #expect(store.held == 4 && store.isStored(second))
        for connection in [first, second, echo] { connection.end(.closed) }
    }

    /// Names come back in one environment variable of at most 128 KiB: past
    /// the budget nothing more is stored, or the next start could not exec.
    @Test func namesStayWithinTheirBudget() {
        let budget = StoredName.ledgerName.utf8.count + 1 + 2 * 3 + 2 * 3
        let store = makeStore(capacity: 100, nameBudget: budget)
        let connections = (1...3).map { connection(UInt64($0), LivePair()) }
        for connection in connections { store.store(connection, now: loop.now) }
        #expect(connections.map { store.isStored($0) } == [true, true, false])
        #expect(store.nameBytes == budget && store.skipped == 1)
        store.unstore(connections[0])
        store.store(connections[2], now: loop.now)
        #expect(store.isStored(connections[2]))
        for connection in connections { connection.end(.closed) }
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
    /// failure: an unreadable name, a listening socket under a connection's
    /// name, three sockets under one name, a name without a ledger record, an
    /// id seen twice. A ledger record whose sockets never reached the store is
    /// cleared.
    @Test func unusableStoredSocketsAreDroppedAndRemoved() throws {
        let store = makeStore(capacity: 100)
        let a = LivePair()
        let b = LivePair()
        let c = LivePair()
        let listening = dup(a.front.fd)
        let ledger = try StoreLedger(slots: 8)
        for id in [5, 6, 8, 10] as [UInt64] {
            _ = ledger.write(.init(id: id, listener: "pg", acceptedAtMilliseconds: 1, client: .init(local: 1, peer: 2)))
        }
        let ledgerCopy = dup(ledger.descriptor.raw)
        let fromUnit = store.receive([
            ActivatedSocket(name: StoredName.ledgerName, descriptor: ledgerCopy),
            ActivatedSocket(name: "c@18446744073709551615@pg", descriptor: a.client),
            ActivatedSocket(name: "@6", descriptor: listening),
            ActivatedSocket(name: "@5", descriptor: a.upstream),
            ActivatedSocket(name: "@5", descriptor: b.client),
            ActivatedSocket(name: "@5", descriptor: dup(b.upstream)),
            ActivatedSocket(name: "@9", descriptor: c.client),
            // Id 8 twice: an echo connection and an older client name.
            ActivatedSocket(name: "@8", descriptor: b.upstream),
            ActivatedSocket(name: "c@8@pg", descriptor: dup(b.upstream)),
        ])
        #expect(fromUnit.isEmpty)
        let recovered = store.takeRecovered()
        #expect(recovered.map(\.id) == [8] && recovered.first?.names == ["@8"])
        #expect(Set(channel.removals) == ["c@18446744073709551615@pg", "@6", "@5", "@9", "c@8@pg"])
        #expect(store.held == 2, "the ledger and the echo connection")
        #expect(fcntl(a.client, F_GETFD) == -1 && fcntl(listening, F_GETFD) == -1, "dropped sockets are closed")
        #expect(log.records.filter { $0.message.contains("removed from the store") }.count == 5)
        // Only id 8's record is left in the ledger (the same memory).
        let reread = StoreLedger(received: FileDescriptor(owning: dup(ledger.descriptor.raw)), slots: 8)
        #expect(reread?.found.keys.sorted() == [8])
        for stored in recovered { store.discard(stored) }
        #expect(store.held == 1)
        let emptied = StoreLedger(received: FileDescriptor(owning: dup(ledger.descriptor.raw)), slots: 8)
        #expect(emptied?.found.isEmpty == true)
    }

    @Test func ledgerRecordsRoundTrip() {
        let record = StoreLedger.Record(
            id: 12345, listener: String(repeating: "x", count: 64), acceptedAtMilliseconds: .max - 1,
            client: .init(local: 65535, peer: 1))
        let bytes = StoreLedger.encode(record)
        #expect(bytes.count == StoreLedger.recordSize)
        #expect(StoreLedger.decode(bytes[...]) == record)
        #expect(StoreLedger.decode([UInt8](repeating: 0, count: StoreLedger.recordSize)[...]) == nil)
        #expect(StoreLedger.decode([UInt8](repeating: 0xff, count: StoreLedger.recordSize)[...]) == nil)
    }

    /// A ledger that is not one (another version's, or garbage) is removed;
    /// the pairs it would describe are dropped, never guessed at.
    @Test func aLedgerThatIsNotOneIsRemoved() throws {
        let store = makeStore(capacity: 100)
        let garbage = try MemoryFile.create(name: "not-a-ledger")
        try MemoryFile.write(garbage.raw, Array("hello, world, not a ledger".utf8), at: 0)
        let pair = LivePair()
        _ = store.receive([
            ActivatedSocket(name: StoredName.ledgerName, descriptor: dup(garbage.raw)),
            ActivatedSocket(name: "@3", descriptor: pair.client),
            ActivatedSocket(name: "@3", descriptor: pair.upstream),
        ])
        #expect(store.takeRecovered().isEmpty)
        #expect(Set(channel.removals) == [StoredName.ledgerName, "@3"] && store.held == 0)
    }
}
