/// One connection of an adopted service, as the sweeps have seen it. reaperd
/// holds no descriptor of it: the kernel's sock_diag dumps are the only view.
final class AdoptedConnection {
    let id: UInt64
    let cookie: UInt64
    let peer: SocketAddress?
    let local: SocketAddress?
    let inode: UInt32
    let firstSeen: Instant
    var info: TCPInfo?
    var lastActivity: Instant
    var bytesAtLastSweep: UInt64 = 0
    var health = Health.idle
    /// Probes outstanding and data unacknowledged at the last look: a socket the
    /// kernel killed is gone from the next dump, so the verdict rests on these.
    var probesLastSeen: UInt8 = 0
    var retransmittingLastSeen = false
    /// When its first FIN was seen (CLOSE_WAIT or FIN_WAIT2), for half_close_timeout.
    var halfClosedAt: Instant?
    /// The owning process, found when the connection first looks suspect.
    var owner: (pid: Int32, command: String)?

    init(id: UInt64, socket: DiagSocket, now: Instant) {
        self.id = id
        cookie = socket.cookie
        peer = socket.remote
        local = socket.local
        inode = socket.inode
        firstSeen = now
        lastActivity = now
    }

    var bytesIn: UInt64 { info?.bytesReceived ?? 0 }
    var bytesOut: UInt64 { info?.bytesAcked ?? 0 }
}

/// One `[service:NAME]` at run time: where its cgroup is, the sock_ops program
/// attached there, and its connections by cookie.
///
/// Invariants: `link` is non-nil exactly while the program is attached to the
/// cgroup whose id is `cgroupID`; closing it detaches (the kernel does it, so
/// a crash leaves nothing attached). Only the sweep writes `connections`.
final class AdoptedService {
    var settings: ServiceSettings
    /// Counters for metrics and status, under the service's name.
    let state: ListenerState
    private(set) var cgroupPath: String?
    private(set) var cgroupID: UInt64?
    private var program: FileDescriptor?
    private var link: FileDescriptor?
    var connections: [UInt64: AdoptedConnection] = [:]
    /// The last problem logged, so a lasting one is logged once, not every sweep.
    var reported: String?
    private var nextSearch = Instant(nanoseconds: 0)

    init(settings: ServiceSettings) {
        self.settings = settings
        state = ListenerState(
            settings: ListenerSettings(name: settings.name, line: settings.line, connection: settings.connection))
    }

    var isAttached: Bool { link != nil }

    /// Loads the sock_ops program for the current settings, if not yet loaded.
    func prepareProgram() throws(AdoptError) {
        if program == nil { program = try AdoptKernel.loadProgram(for: settings) }
    }

    /// New settings (a reload): the program is rebuilt and attached again.
    func update(_ next: ServiceSettings) {
        guard next != settings else { return }
        settings = next
        state.settings = ListenerSettings(name: next.name, line: next.line, connection: next.connection)
        detach()
        program = nil
        cgroupPath = nil
    }

    /// Makes sure the program is attached to the service's current cgroup.
    /// Returns what changed: `.attached` for a new cgroup (a start, or the unit
    /// restarted), so existing connections get retrofitted; throws when the
    /// kernel refuses (no privilege, a kernel without sock_ops).
    func follow(mount: String, now: Instant) throws(AdoptError) -> Following {
        if let path = cgroupPath, let id = Cgroups.id(of: path), id == cgroupID, link != nil { return .unchanged }
        let path: String?
        switch settings.target {
        case .cgroup(let relative): path = mount + relative
        case .unit(let name):
            if let known = cgroupPath, Cgroups.id(of: known) != nil {
                path = known
            } else if now >= nextSearch {
                nextSearch = now.adding(.seconds(1))
                path = Cgroups.find(unit: name, below: mount)
            } else {
                path = nil
            }
        }
        guard let path, let id = Cgroups.id(of: path) else {
            let wasAttached = link != nil
            detach()
            cgroupPath = nil
            return wasAttached ? .lost : .absent
        }
        detach()
        try prepareProgram()
        let directory: FileDescriptor
        do {
            directory = try Cgroups.open(path)
        } catch {
            throw AdoptError("opening cgroup \(path)", error.errno)
        }
        guard let raw = program?.raw else { return .absent }
        link = try AdoptKernel.attach(program: raw, cgroup: directory.raw)
        cgroupPath = path
        cgroupID = id
        return .attached(path)
    }

    enum Following: Equatable {
        case unchanged
        case attached(String)
        /// The cgroup is gone (the unit stopped): nothing to watch until it returns.
        case lost
        case absent
    }

    func detach() {
        link = nil  // closing the link detaches the program
        cgroupID = nil
    }

    func covers(_ socket: DiagSocket) -> Bool { settings.ports.isEmpty || settings.ports.contains(socket.localPort) }
}
