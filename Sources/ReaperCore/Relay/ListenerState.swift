internal import Synchronization

/// Counters of one listener, kept across reloads (SPEC §6).
public struct ListenerCounters: Sendable, Equatable {
    public var accepted: UInt64 = 0
    public var refusedLimit: UInt64 = 0
    public var refusedUpstream: UInt64 = 0
    /// `accept_proxy_protocol`: no valid PROXY header in time.
    public var refusedProxyHeader: UInt64 = 0
    /// Failed lookups of an upstream given by name, whatever names it had.
    public var resolveFailures: UInt64 = 0
    public var closed: UInt64 = 0
    public var reaped: [ReapReason: UInt64] = [:]
    /// Client to upstream.
    public var bytesIn: UInt64 = 0
    /// Upstream to client.
    public var bytesOut: UInt64 = 0
    public init() {}

    public var reapedTotal: UInt64 { reaped.values.reduce(0, +) }

    /// Adds another worker's counters for the same listener.
    mutating func add(_ other: ListenerCounters) {
        accepted &+= other.accepted
        refusedLimit &+= other.refusedLimit
        refusedUpstream &+= other.refusedUpstream
        refusedProxyHeader &+= other.refusedProxyHeader
        resolveFailures &+= other.resolveFailures
        closed &+= other.closed
        for (reason, count) in other.reaped { reaped[reason, default: 0] &+= count }
        bytesIn &+= other.bytesIn
        bytesOut &+= other.bytesOut
    }
}

/// Connections open now on one listener, counted by every worker at once.
final class OpenCount: Sendable {
    private let value = Atomic<Int>(0)

    var current: Int { value.load(ordering: .relaxed) }

    /// Takes one place unless `limit` are taken; false (nothing taken) then.
    /// Add first, check after: two workers at `limit - 1` cannot both get in.
    func take(limit: Int) -> Bool {
        guard value.wrappingAdd(1, ordering: .relaxed).newValue > limit else { return true }
        value.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    func give() { value.wrappingSubtract(1, ordering: .relaxed) }

    func set(_ count: Int) { value.store(count, ordering: .relaxed) }
}

/// A listener's settings and counters, shared by its connections. A reload
/// replaces `settings`; a removed listener lives on while its connections do.
///
/// Each worker has its own `ListenerState` per listener (its connections'
/// counters, its copy of the settings and route); only `openCount` is shared,
/// so `max_connections` holds across workers.
public final class ListenerState {
    public let name: String
    public internal(set) var settings: ListenerSettings
    public internal(set) var counters = ListenerCounters()
    /// Connections open now on every worker, for `max_connections` per listener.
    let openCount: OpenCount
    public var open: Int { openCount.current }
    /// False once a reload removed the listener.
    public internal(set) var configured = true
    /// Where a relay's new connections go. nil in echo mode, and while an
    /// upstream name has never resolved (clients are refused, as `upstream`).
    var route: UpstreamRoute?
    /// The lookups of an upstream given by name; nil for an address.
    var resolution: UpstreamResolution?

    init(settings: ListenerSettings, openCount: OpenCount = OpenCount()) {
        self.name = settings.name
        self.settings = settings
        self.openCount = openCount
    }

    var connection: ConnectionSettings { settings.connection }
}
