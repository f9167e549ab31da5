/// Connections that survive restarts and crashes: every connection that has
/// lived `fd_store_min_age`, and every listening socket reaperd bound, sit in
/// systemd's file descriptor store and come back to the next reaperd process.
///
/// This type alone decides what is stored, under which name, and when it is
/// removed; only it knows what is stored. Invariants:
/// - A connection is stored whole or not at all: its sockets travel in one
///   FDSTORE message under one name, so PID 1 takes both or neither.
/// - `held` counts the descriptors PID 1 holds under reaperd's names, or will
///   once the notify queue drains, and never passes `capacity`: systemd 252
///   keeps the first descriptors of a message that overflows its store and
///   closes the rest, which would split a pair.
/// - `nameBytes` counts what those names take in LISTEN_FDNAMES at the next
///   start and never passes `nameBudget`: past 128 KiB the exec fails (E2BIG)
///   and every stored connection is lost (`StoreLedger`).
/// - A stored connection has a ledger record, written before its sockets are
///   sent and cleared when its name is removed.
/// - Every name is removed exactly once: when its connection ends, when its
///   listener closes or is renamed, or when what came back cannot be used. A
///   store still waiting in the notify queue is withdrawn instead.
/// - While a connection is stored, PID 1 (or our duplicate waiting in the
///   queue) holds a copy of each socket, so close(2) of ours does not take it
///   out of epoll: `Connection.end` asks `isStored` and deregisters
///   explicitly; an unstored socket's close(2) leaves the epoll set by itself.
/// - A socket that came back from the store is owned by this type until it is
///   handed out (`takeListener`, `takeRecovered`); what cannot be used is
///   logged, removed from the store and closed here.
final class ConnectionStore {
    /// One stored connection: its names (one; two for a pair an older reaperd
    /// stored side by side) and how many descriptors PID 1 holds for it.
    private struct Entry {
        let names: [String]
        let descriptors: Int
        /// Its record in the ledger (none for pairs an older reaperd stored).
        var slot: Int?

        /// What the names take in LISTEN_FDNAMES: each once per descriptor,
        /// with its `:` separator.
        var nameBytes: Int {
            let each = descriptors / max(1, names.count)
            return names.reduce(0) { $0 + ($1.utf8.count + 1) * each }
        }
    }

    /// LISTEN_FDNAMES is one environment variable, at most 128 KiB
    /// (MAX_ARG_STRLEN) with its `LISTEN_FDNAMES=`; room is left for a
    /// socket unit's own names.
    static let nameBudget = 120 * 1024

    private let channel: (any DescriptorStore)?
    /// Descriptors the store may hold (`$FDSTORE`, which the unit sets to its
    /// FileDescriptorStoreMax=); nil stores nothing new (`fd_store = no`, or
    /// no store announced), while what came back is still removed when done.
    let capacity: Int?
    private(set) var held = 0
    private(set) var nameBytes = 0
    private let budget: Int
    private var ledger: StoreLedger?
    private var connections: [UInt64: Entry] = [:]
    private var listeners: [ObjectIdentifier: String] = [:]
    /// Listening sockets back from the store, not yet adopted.
    private var receivedListeners: [ActivatedSocket] = []
    /// Connections back from the store, not yet handed to the daemon.
    private var received: [RecoveredConnection] = []
    /// Connections not stored because the store was full or a descriptor
    /// could not be duplicated.
    private(set) var skipped = 0
    private var skipWarnedAt: Instant?
    private let logger: Logger

    /// `nameBudget` is only for tests; reaperd keeps the default.
    init(channel: (any DescriptorStore)?, capacity: Int?, logger: Logger, nameBudget: Int = ConnectionStore.nameBudget)
    {
        self.channel = channel
        self.budget = nameBudget
        self.capacity = channel == nil ? nil : capacity
        self.logger = logger
    }

    /// Stores new connections and listeners.
    var isEnabled: Bool { capacity != nil }
    var isFlushed: Bool { channel?.isFlushed ?? true }
    var storedConnections: Int { connections.count }

    func attach(to loop: EventLoop) { channel?.attach(to: loop) }

    // MARK: Connections

    func isStored(_ connection: Connection) -> Bool { connections[connection.id] != nil }

    /// Hands the connection's sockets to the store in one message, unless it
    /// is stored already, not relaying yet, or the store has no room.
    func store(_ connection: Connection, now: Instant) {
        guard isEnabled, connections[connection.id] == nil, let candidate = StoreCandidate(connection) else { return }
        store(candidate, now: now)
    }

    /// The same for a worker's connection, whose sockets a worker duplicated
    /// (`WorkerStore`); the caller closes those duplicates afterwards.
    func store(_ candidate: StoreCandidate, now: Instant) {
        guard let capacity, let channel, connections[candidate.id] == nil else { return }
        let descriptors = candidate.descriptors
        let name = StoredName.connection(id: candidate.id).text
        let entry = Entry(names: [name], descriptors: descriptors.count)
        guard held + descriptors.count <= capacity, nameBytes + entry.nameBytes <= budget,
            let ledger = ledgerInStore(channel), let local = try? Sockets.localAddress(descriptors[0])
        else { return skip(now: now) }
        let record = StoreLedger.Record(
            id: candidate.id, listener: candidate.listener,
            acceptedAtMilliseconds: candidate.acceptedAtMilliseconds,
            client: .init(local: local.port, peer: candidate.peerPort))
        guard let slot = ledger.write(record) else { return skip(now: now) }
        guard channel.store(descriptors, name: name) else {
            ledger.clear(slot)
            return skip(now: now)
        }
        keep(Entry(names: [name], descriptors: descriptors.count, slot: slot), for: candidate.id)
    }

    private func keep(_ entry: Entry, for id: UInt64) {
        held += entry.descriptors
        nameBytes += entry.nameBytes
        connections[id] = entry
    }

    /// The ledger, created and stored before the first connection is.
    private func ledgerInStore(_ channel: any DescriptorStore) -> StoreLedger? {
        if let ledger { return ledger }
        guard let capacity, held < capacity,
            let created = try? StoreLedger(slots: capacity),
            channel.store([created.descriptor.raw], name: StoredName.ledgerName)
        else { return nil }
        held += 1
        nameBytes += StoredName.ledgerName.utf8.count + 1
        ledger = created
        return created
    }

    /// The sweep's part: a connection is stored once it has lived `minimumAge`,
    /// so connections shorter than that never reach PID 1.
    func storeIfDue(_ connection: Connection, now: Instant, minimumAge: Duration) {
        guard isEnabled, connections[connection.id] == nil, now.since(connection.startedAt) >= minimumAge else {
            return
        }
        store(connection, now: now)
    }

    /// When the sweep should next offer `connection` to `storeIfDue`: nil when
    /// it is stored, storing is off, or the store is full (a connection that
    /// waits for room is offered again at its next look, not every sweep).
    func storeDue(_ connection: Connection, minimumAge: Duration) -> Instant? {
        guard let capacity, connections[connection.id] == nil, held + 2 <= capacity else { return nil }
        return connection.startedAt.adding(minimumAge)
    }

    /// The connection is ending (its sockets not yet closed): its names leave
    /// the store.
    func unstore(_ connection: Connection) {
        guard connections[connection.id] != nil else { return }
        Self.finishStored(connection)
        unstore(id: connection.id)
    }

    /// The names of connection `id` leave the store (a worker's connection
    /// ended; its sockets were shut down by the worker).
    func unstore(id: UInt64) {
        guard let entry = connections.removeValue(forKey: id) else { return }
        remove(entry)
    }

    /// FIN now, although PID 1 still holds a copy until it reads the removal;
    /// it also drops a copy whose socket hangs up, should the removal be lost.
    /// A reset passed on must stay a reset: SO_LINGER 0 is set, and the RST
    /// goes out when PID 1 closes its copy; a FIN now would say "complete".
    static func finishStored(_ connection: Connection) {
        guard !connection.endsWithReset else { return }
        if let fd = connection.clientDescriptor { Sockets.shutdownBoth(fd) }
        if let fd = connection.upstreamDescriptor { Sockets.shutdownBoth(fd) }
    }

    private func remove(_ entry: Entry) {
        for name in entry.names { channel?.remove(name: name) }
        if let slot = entry.slot { ledger?.clear(slot) }
        held = max(0, held - entry.descriptors)
        nameBytes = max(0, nameBytes - entry.nameBytes)
    }

    private func skip(now: Instant) {
        skipped += 1
        guard skipWarnedAt.map({ now.since($0) >= .seconds(60) }) ?? true else { return }
        skipWarnedAt = now
        logger.warning(
            "file descriptor store full or busy: new connections are not protected across restarts",
            [("REAPERD_SKIPPED", "\(skipped)"), ("REAPERD_STORE_HELD", "\(held)")])
    }

    // MARK: Listening sockets

    func isStored(_ endpoint: ListeningEndpoint) -> Bool { listeners[ObjectIdentifier(endpoint)] != nil }

    /// A stored listening socket for this address, handed out once; `adopted`
    /// must follow when the daemon makes an endpoint of it. One stored under
    /// another listener's name serves too: the configuration renamed or moved
    /// the listener while reaperd was down, and binding afresh would fail
    /// (EADDRINUSE: PID 1 still holds the stored socket).
    func takeListener(_ listener: String, address: Endpoint) -> ActivatedSocket? {
        let name = StoredName.listener(listener, address: address.description)
        let sameAddress = "@" + name.split(separator: "@", maxSplits: 2).last.map(String.init)!
        guard
            let index = receivedListeners.firstIndex(where: { $0.name == name })
                ?? receivedListeners.firstIndex(where: { $0.name.hasSuffix(sameAddress) })
        else { return nil }
        return receivedListeners.remove(at: index)
    }

    /// `endpoint` serves the socket `takeListener` gave: it stays stored, under
    /// its listener's name now.
    func adopted(_ endpoint: ListeningEndpoint, from socket: ActivatedSocket) {
        listeners[ObjectIdentifier(endpoint)] = socket.name
        followRename(endpoint)
    }

    /// Stores a listening socket reaperd bound (a socket unit's are systemd's).
    func store(_ endpoint: ListeningEndpoint) {
        guard let capacity, let channel, !endpoint.activated, !isStored(endpoint), held < capacity else { return }
        let name = Self.name(of: endpoint)
        guard nameBytes + name.utf8.count + 1 <= budget, channel.store([endpoint.socket.raw], name: name)
        else { return }
        held += 1
        nameBytes += name.utf8.count + 1
        listeners[ObjectIdentifier(endpoint)] = name
    }

    /// The endpoint is closing for good (a reload removed its address).
    func unstore(_ endpoint: ListeningEndpoint) {
        guard let name = listeners.removeValue(forKey: ObjectIdentifier(endpoint)) else { return }
        remove(Entry(names: [name], descriptors: 1))
    }

    /// A reload moved `endpoint` (same address) to another listener, or renamed
    /// its listener: the stored socket follows under the new name, or the next
    /// start would not find it and fail to bind its address (EADDRINUSE: PID 1
    /// still holds the old socket).
    func followRename(_ endpoint: ListeningEndpoint) {
        guard let name = listeners[ObjectIdentifier(endpoint)], name != Self.name(of: endpoint) else { return }
        unstore(endpoint)
        store(endpoint)
    }

    private static func name(of endpoint: ListeningEndpoint) -> String {
        StoredName.listener(endpoint.listener.name, address: endpoint.key)
    }

    /// Stored listening sockets the configuration no longer names.
    func releaseUnadoptedListeners() {
        for socket in receivedListeners {
            remove(Entry(names: [socket.name], descriptors: 1))
            FileDescriptor(owning: socket.descriptor).close()
            logger.info("stored listening socket no longer configured, released", [("REAPERD_FDNAME", socket.name)])
        }
        receivedListeners.removeAll()
    }

    // MARK: What came back

    /// Sorts out what systemd passed at start: keeps what the store gave back
    /// (reaperd's names) and returns the socket unit's sockets. Sockets of the
    /// wrong kind, names this version cannot read, and pairs whose client side
    /// cannot be told apart are dropped: none was written by the operator, so
    /// refusing to start would only keep the service down.
    func receive(_ sockets: [ActivatedSocket]) -> [ActivatedSocket] {
        var fromUnit: [ActivatedSocket] = []
        var pairs: [String: [ActivatedSocket]] = [:]
        var pairOrder: [String] = []
        var older: [UInt64: OlderPair] = [:]
        for socket in sockets {
            guard StoredName.isReaperds(socket.name) else {
                fromUnit.append(socket)
                continue
            }
            held += 1
            nameBytes += socket.name.utf8.count + 1
            switch StoredName(parsing: socket.name) {
            case .ledger:
                adoptLedger(socket)
            case .listener:
                let kind = socket.kind
                if kind == .listeningStream {
                    receivedListeners.append(socket)
                } else {
                    drop([socket], what: "listening socket", because: "is not a listening stream socket (\(kind))")
                }
            case .connection:
                if pairs[socket.name] == nil { pairOrder.append(socket.name) }
                pairs[socket.name, default: []].append(socket)
            case .client(let id, let listener, let accepted):
                older[id, default: OlderPair()].clients.append((socket, listener, accepted))
            case .upstream(let id, _):
                older[id, default: OlderPair()].upstreams.append(socket)
            case nil:
                drop([socket], because: "has a name this reaperd cannot read")
            }
        }
        for name in pairOrder { recoverPair(name: name, sockets: pairs[name] ?? []) }
        ledger?.clearUnclaimed()
        for id in older.keys.sorted() { recoverOlder(id: id, older[id] ?? OlderPair()) }
        var seen = Set<UInt64>()
        for connection in received where !seen.insert(connection.id).inserted {
            discard(connection, because: "has the id of another stored connection")
        }
        received = received.filter { !$0.isDiscarded }
        return fromUnit
    }

    /// Connections back from the store, for the daemon to adopt or discard.
    func takeRecovered() -> [RecoveredConnection] {
        defer { received.removeAll() }
        return received.sorted { $0.id < $1.id }
    }

    /// `connection` now owns the sockets of `recovered`: they stay stored under
    /// their names until it ends.
    func adopted(_ recovered: RecoveredConnection, by connection: Connection) {
        connections[connection.id] = Entry(
            names: recovered.names, descriptors: recovered.descriptorCount, slot: recovered.slot)
    }

    /// A recovered connection the daemon cannot use: closed, removed, logged
    /// when `why` says why (dead ones are only counted).
    func discard(_ recovered: RecoveredConnection, because why: String? = nil) {
        guard !recovered.isDiscarded else { return }
        recovered.isDiscarded = true
        if let why {
            logger.warning(
                "stored connection \(recovered.names.joined(separator: ", ")) \(why); closed and removed from the store",
                [("REAPERD_FDNAME", recovered.names.joined(separator: ","))])
        }
        FileDescriptor(owning: recovered.client).close()
        if let upstream = recovered.upstream { FileDescriptor(owning: upstream).close() }
        remove(Entry(names: recovered.names, descriptors: recovered.descriptorCount, slot: recovered.slot))
    }

    /// The ledger that came back: its records describe the connections. A
    /// second one under the same name (never made) is closed, and ours stored
    /// again, since removing the name took both from PID 1.
    private func adoptLedger(_ socket: ActivatedSocket) {
        guard ledger == nil else {
            drop([socket], what: "ledger", because: "is a second ledger")
            if let ledger, let channel, channel.store([ledger.descriptor.raw], name: StoredName.ledgerName) {
                held += 1
                nameBytes += StoredName.ledgerName.utf8.count + 1
            }
            return
        }
        guard let received = StoreLedger(received: FileDescriptor(owning: socket.descriptor), slots: capacity ?? 0)
        else {
            logger.warning(
                "stored ledger \(socket.name) is not one this reaperd can read; removed from the store",
                [("REAPERD_FDNAME", socket.name)])
            remove(Entry(names: [socket.name], descriptors: 1))
            return
        }
        ledger = received
    }

    private struct OlderPair {
        var clients: [(socket: ActivatedSocket, listener: String, accepted: UInt64?)] = []
        var upstreams: [ActivatedSocket] = []
    }

    /// One connection's name: its ledger record says its listener, its age,
    /// and which socket is the client (the one with the recorded ports).
    private func recoverPair(name: String, sockets: [ActivatedSocket]) {
        guard case .connection(let id) = StoredName(parsing: name) else { return }
        guard let (slot, record) = ledger?.claim(id) else {
            return drop(sockets, what: "connection", because: "has no record in the store's ledger")
        }
        let ports = record.client
        func dropClearing(_ sockets: [ActivatedSocket], what: String = "connection", because why: String) {
            ledger?.clear(slot)
            drop(sockets, what: what, because: why)
        }
        if let wrong = sockets.first(where: { $0.kind != .stream }) {
            return dropClearing(
                sockets, what: "connection socket", because: "is not a stream connection (\(wrong.kind))")
        }
        let client: ActivatedSocket
        var upstream: ActivatedSocket?
        switch sockets.count {
        case 1:
            client = sockets[0]
        case 2:
            let matching = sockets.filter { Self.ports(of: $0.descriptor) == ports }
            guard matching.count == 1, let found = matching.first else {
                return dropClearing(
                    sockets, because: "holds two sockets that cannot be told apart as client and upstream")
            }
            client = found
            upstream = sockets.first { $0.descriptor != found.descriptor }
        default:
            return dropClearing(sockets, because: "holds \(sockets.count) sockets, not a client and an upstream")
        }
        received.append(
            RecoveredConnection(
                id: id, listener: record.listener,
                acceptedAt: Self.instant(milliseconds: record.acceptedAtMilliseconds),
                client: client.descriptor, upstream: upstream?.descriptor, names: [name], slot: slot))
    }

    /// `c@` and `u@` names from an older reaperd: a pair by id.
    private func recoverOlder(id: UInt64, _ pair: OlderPair) {
        let all = pair.clients.map(\.socket) + pair.upstreams
        guard pair.clients.count == 1, pair.upstreams.count <= 1, let client = pair.clients.first else {
            return dropEachName(all, because: "is one of several, or an upstream without its client")
        }
        if let wrong = all.first(where: { $0.kind != .stream }) {
            return dropEachName(all, what: "connection socket", because: "is not a stream connection (\(wrong.kind))")
        }
        received.append(
            RecoveredConnection(
                id: id, listener: client.listener, acceptedAt: client.accepted.flatMap(Self.instant(milliseconds:)),
                client: client.socket.descriptor, upstream: pair.upstreams.first?.descriptor,
                names: all.map(\.name), slot: nil))
    }

    private func dropEachName(_ sockets: [ActivatedSocket], what: String = "socket", because why: String) {
        var byName: [String: [ActivatedSocket]] = [:]
        for socket in sockets { byName[socket.name, default: []].append(socket) }
        for (_, group) in byName.sorted(by: { $0.key < $1.key }) { drop(group, what: what, because: why) }
    }

    /// Sockets under one name that cannot be used.
    private func drop(_ sockets: [ActivatedSocket], what: String = "socket", because why: String) {
        guard let name = sockets.first?.name else { return }
        logger.warning(
            "stored \(what) \(name) \(why); closed and removed from the store",
            [("REAPERD_FDNAME", name), ("REAPERD_KIND", sockets.map { "\($0.kind)" }.joined(separator: ","))])
        for socket in sockets { FileDescriptor(owning: socket.descriptor).close() }
        remove(Entry(names: [name], descriptors: sockets.count))
    }

    private static func ports(of fd: Int32) -> StoredName.ClientPorts? {
        guard let local = try? Sockets.localAddress(fd), let peer = try? Sockets.peerAddress(fd), !local.isUnix
        else { return nil }
        return .init(local: local.port, peer: peer.port)
    }

    private static func instant(milliseconds: UInt64) -> Instant {
        Instant(nanoseconds: milliseconds.multipliedReportingOverflow(by: 1_000_000).partialValue)
    }
}

/// A connection back from the store: its sockets, owned by `ConnectionStore`
/// until the daemon adopts it (`adopted`) or gives it back (`discard`).
final class RecoveredConnection {
    let id: UInt64
    let listener: String
    /// The original accept time, when the stored name carried it.
    let acceptedAt: Instant?
    let client: Int32
    /// nil in echo mode.
    let upstream: Int32?
    let names: [String]
    /// Its ledger record (none for pairs an older reaperd stored).
    let slot: Int?
    fileprivate(set) var isDiscarded = false

    var descriptorCount: Int { upstream == nil ? 1 : 2 }

    init(
        id: UInt64, listener: String, acceptedAt: Instant?, client: Int32, upstream: Int32?, names: [String],
        slot: Int?
    ) {
        self.id = id
        self.listener = listener
        self.acceptedAt = acceptedAt
        self.client = client
        self.upstream = upstream
        self.names = names
        self.slot = slot
    }
}
