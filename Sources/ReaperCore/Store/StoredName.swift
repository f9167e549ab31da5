/// Names of descriptors in systemd's store. `@` separates the parts because
/// listener names cannot contain it and systemd forbids `:` in descriptor names.
/// A name is at most 255 bytes (FDNAME=); a listener name is at most 64.
public enum StoredName: Equatable, Sendable {
    /// A listening socket: `l@LISTENER@ADDRESS` (address with `:` as `_`).
    case listener(String)
    /// Connection ID, both its sockets under one name (one FDSTORE message):
    /// `@` and the id in base 36, as short as a name can be, because every
    /// stored name comes back in one environment variable limited to 128 KiB.
    /// Its listener, accept time and client ports are in the `StoreLedger`.
    case connection(id: UInt64)
    /// The `StoreLedger`'s memfd.
    case ledger
    /// From reaperd before pairs were stored in one message, still read so an
    /// upgrade keeps connections: the client side `c@ID@LISTENER[@ACCEPTED]`…
    case client(id: UInt64, listener: String, acceptedAtMilliseconds: UInt64?)
    /// … and the upstream side `u@ID@LISTENER`.
    case upstream(id: UInt64, listener: String)

    /// The client socket's local and peer ports. The upstream socket is told
    /// apart by them: its local port would have to equal the listener's and its
    /// peer port the client's at once, which a recovery refuses as ambiguous.
    public struct ClientPorts: Equatable, Sendable {
        public let local: UInt16
        public let peer: UInt16

        public init(local: UInt16, peer: UInt16) {
            self.local = local
            self.peer = peer
        }
    }

    public var text: String {
        switch self {
        case .listener(let name): "l@\(name)"
        case .connection(let id): "@" + String(id, radix: 36)
        case .ledger: Self.ledgerName
        case .client(let id, let listener, let accepted?): "c@\(id)@\(listener)@\(accepted)"
        case .client(let id, let listener, nil): "c@\(id)@\(listener)"
        case .upstream(let id, let listener): "u@\(id)@\(listener)"
        }
    }

    public static func listener(_ name: String, address: String) -> String {
        "l@\(name)@" + String(address.map { $0 == ":" ? "_" : $0 })
    }

    static let ledgerName = "ledger@reaperd"

    /// A name only reaperd makes (`@…`, `l@`, `c@`, `u@` and the ledger's: no
    /// listener or socket unit name can contain `@`), whether or not this
    /// version understands it.
    public static func isReaperds(_ text: String) -> Bool {
        text == ledgerName || ["@", "l@", "c@", "u@"].contains { text.hasPrefix($0) }
    }

    /// nil for names that are not reaperd's, or that this version cannot read
    /// (an id of UInt64.max would overflow the next id: never made, so refused).
    public init?(parsing text: String) {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false).map(String.init)
        func id(_ part: String) -> UInt64? { UInt64(part).flatMap { $0 < .max ? $0 : nil } }
        switch parts.first {
        case "l" where parts.count == 3 && !parts[1].isEmpty:
            self = .listener(parts[1])
        case "" where parts.count == 2:
            let digits = parts[1]
            guard (1...13).contains(digits.utf8.count),
                digits.utf8.allSatisfy({ (48...57).contains($0) || (97...122).contains($0) }),
                let id = UInt64(digits, radix: 36).flatMap({ $0 < .max && $0 > 0 ? $0 : nil })
            else { return nil }
            self = .connection(id: id)
        case "ledger" where text == Self.ledgerName:
            self = .ledger
        case "c" where parts.count == 3 || parts.count == 4:
            guard let id = id(parts[1]), !parts[2].isEmpty else { return nil }
            var accepted: UInt64?
            if parts.count == 4 {
                guard let value = UInt64(parts[3]) else { return nil }
                accepted = value
            }
            self = .client(id: id, listener: parts[2], acceptedAtMilliseconds: accepted)
        case "u" where parts.count == 3:
            guard let id = id(parts[1]), !parts[2].isEmpty else { return nil }
            self = .upstream(id: id, listener: parts[2])
        default:
            return nil
        }
    }
}
