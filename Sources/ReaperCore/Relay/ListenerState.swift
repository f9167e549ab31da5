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
}

/// A listener's settings and counters, shared by its connections. A reload
/// replaces `settings`; a removed listener lives on while its connections do.
public final class ListenerState {
    public let name: String
    public internal(set) var settings: ListenerSettings
    public internal(set) var counters = ListenerCounters()
    /// Connections open now, for `max_connections` per listener.
    public internal(set) var open = 0
    /// False once a reload removed the listener.
    public internal(set) var configured = true
    /// Where a relay's new connections go. nil in echo mode, and while an
    /// upstream name has never resolved (clients are refused, as `upstream`).
    var route: UpstreamRoute?
    /// The lookups of an upstream given by name; nil for an address.
    var resolution: UpstreamResolution?

    init(settings: ListenerSettings) {
        self.name = settings.name
        self.settings = settings
    }

    var connection: ConnectionSettings { settings.connection }
}
