/// What the descriptor store needs of a connection: its id, its sockets
/// (client first) and its ledger record.
struct StoreCandidate {
    let id: UInt64
    let descriptors: [Int32]
    let listener: String
    let acceptedAtMilliseconds: UInt64
    let peerPort: UInt16

    /// nil unless the connection relays and has every socket it needs.
    init?(_ connection: Connection) {
        guard connection.phase == .relaying, let client = connection.clientDescriptor else { return nil }
        var descriptors = [client]
        if !connection.isEcho {
            guard let upstream = connection.upstreamDescriptor else { return nil }
            descriptors.append(upstream)
        }
        self.init(
            id: connection.id, descriptors: descriptors, listener: connection.listener.name,
            acceptedAtMilliseconds: connection.startedAt.nanoseconds / 1_000_000, peerPort: connection.peer.port)
    }

    init(id: UInt64, descriptors: [Int32], listener: String, acceptedAtMilliseconds: UInt64, peerPort: UInt16) {
        self.id = id
        self.descriptors = descriptors
        self.listener = listener
        self.acceptedAtMilliseconds = acceptedAtMilliseconds
        self.peerPort = peerPort
    }
}

/// A worker's side of systemd's descriptor store. The store is the
/// primary's (one ledger, one NOTIFY_SOCKET queue, one count of what PID 1
/// holds), so a worker hands it duplicates of a connection's sockets through
/// the primary's mailbox and says when the connection ends. One worker's
/// messages run in the order it posted them: a removal never overtakes its
/// store. The connection comes back after a restart on the primary.
///
/// Invariant: `posted` is every connection of this worker whose sockets may
/// have a copy outside it (queued to the primary, or in PID 1): those are
/// taken out of epoll explicitly when they end (`isStored`).
final class WorkerStore {
    private var posted: Set<UInt64> = []
    private let link: WorkerLink

    init(link: WorkerLink) { self.link = link }

    func isStored(_ connection: Connection) -> Bool { posted.contains(connection.id) }

    func store(_ connection: Connection) {
        guard !posted.contains(connection.id), let candidate = StoreCandidate(connection) else { return }
        var copies: [Int32] = []
        for descriptor in candidate.descriptors {
            guard let copy = try? Files.duplicate(descriptor) else {
                for raw in copies { FileDescriptor(owning: raw).close() }
                return
            }
            copies.append(copy.release())
        }
        posted.insert(connection.id)
        let handed = StoreCandidate(
            id: candidate.id, descriptors: copies, listener: candidate.listener,
            acceptedAtMilliseconds: candidate.acceptedAtMilliseconds, peerPort: candidate.peerPort)
        let primary = link.primary
        link.primaryMailbox.post {
            primary.store.store(handed, now: primary.loop.now)
            // The store made its own duplicates (or skipped it): ours go.
            for raw in handed.descriptors { FileDescriptor(owning: raw).close() }
        }
    }

    /// Stored once it has lived `minimumAge` (the sweep's part).
    func storeIfDue(_ connection: Connection, now: Instant, minimumAge: Duration) {
        guard !posted.contains(connection.id), now.since(connection.startedAt) >= minimumAge else { return }
        store(connection)
    }

    func storeDue(_ connection: Connection, minimumAge: Duration) -> Instant? {
        posted.contains(connection.id) ? nil : connection.startedAt.adding(minimumAge)
    }

    /// The connection is ending, its sockets still open.
    func unstore(_ connection: Connection) {
        guard posted.remove(connection.id) != nil else { return }
        ConnectionStore.finishStored(connection)
        let id = connection.id
        let primary = link.primary
        link.primaryMailbox.post { primary.store.unstore(id: id) }
    }
}
