/// Where a relay listener connects, as `upstream =` writes it: an address
/// (numeric, `localhost`, or a Unix path), connected as is, or a host name,
/// which the resolver thread looks up and re-looks up every `resolve_interval`.
///
/// Only `upstream` takes names: a listen address or the metrics address is
/// bound, and binding by name would make start-up wait on DNS.
public enum Upstream: Hashable, Sendable, CustomStringConvertible {
    /// A numeric address or a Unix path: no lookup, no resolver involved.
    case address(Endpoint)
    /// A host name (RFC 1123, lower-cased) and a TCP port, 1 ... 65535.
    case name(host: String, port: UInt16)

    /// The longest host name, without a trailing dot (RFC 1035: 255 octets on
    /// the wire are 253 characters of text).
    public static let maxNameLength = 253
    /// The longest label between two dots (RFC 1035).
    public static let maxLabelLength = 63

    /// Parses `HOST:PORT` with a name or an address, `[V6]:PORT` or `unix:/PATH`.
    /// Anything `Endpoint.parse` accepts is an address; what it refuses only
    /// because the host is not numeric is tried as a name.
    public static func parse(_ text: String) -> Result<Upstream, EndpointParseError> {
        let numeric = Endpoint.parse(text)
        if case .success(let endpoint) = numeric { return .success(.address(endpoint)) }
        guard !text.hasPrefix("unix:"), !text.hasPrefix("["), let colon = text.lastIndex(of: ":") else {
            return numeric.map { .address($0) }
        }
        let host = String(text[..<colon])
        // A colon in the host, an empty host or a bad port: Endpoint's message says it best.
        guard !host.isEmpty, !host.contains(":") else { return numeric.map { .address($0) } }
        let portText = text[text.index(after: colon)...]
        guard !portText.isEmpty, portText.utf8.count <= 5, portText.utf8.allSatisfy(isDigit),
            let port = UInt16(portText)
        else {
            return .failure(EndpointParseError("\(text): the port must be a number from 0 to 65535"))
        }
        if let problem = hostNameProblem(host) {
            return .failure(EndpointParseError("\(text): \(problem)"))
        }
        return .success(.name(host: lowercased(trimmingFinalDot(host)), port: port))
    }

    /// The text form `parse` accepts back.
    public var description: String {
        switch self {
        case .address(let endpoint): endpoint.description
        case .name(let host, let port): "\(host):\(port)"
        }
    }

    /// The TCP port; nil for a Unix path.
    public var port: UInt16? {
        switch self {
        case .address(let endpoint): endpoint.port
        case .name(_, let port): port
        }
    }

    /// The address when no lookup is needed.
    public var endpoint: Endpoint? {
        if case .address(let endpoint) = self { endpoint } else { nil }
    }

    /// Why `host` is not a host name, for the operator; nil when it is one.
    /// RFC 1123: dot-separated labels of letters, digits and hyphens, none
    /// empty, none starting or ending with a hyphen, at most 63 characters
    /// each and 253 in all; one trailing dot (a fully qualified name) is fine.
    /// Underscores are refused: resolvers pass them, but no A or AAAA record
    /// a relay could use is named with one.
    static func hostNameProblem(_ host: String) -> String? {
        let name = trimmingFinalDot(host)
        guard !name.isEmpty else { return "missing host name before :PORT" }
        guard name.utf8.count <= maxNameLength else {
            return "the host name is longer than \(maxNameLength) characters"
        }
        for label in name.split(separator: ".", omittingEmptySubsequences: false) {
            guard !label.isEmpty else { return "\(host) has an empty label (two dots in a row, or a leading dot)" }
            guard label.utf8.count <= maxLabelLength else {
                return "\(host): the label \(label) is longer than \(maxLabelLength) characters"
            }
            guard label.utf8.allSatisfy(isLabelByte) else {
                return "\(host) is not a host name or a numeric address (letters, digits, hyphens and dots only)"
            }
            guard label.first != "-", label.last != "-" else {
                return "\(host): a label may not start or end with a hyphen"
            }
        }
        // All digits and dots is an IPv4 address Endpoint refused (300.1.1.1), never a name.
        if name.utf8.allSatisfy({ isDigit($0) || $0 == UInt8(ascii: ".") }) {
            return "\(host) is not a valid IPv4 address"
        }
        return nil
    }

    private static func trimmingFinalDot(_ host: String) -> String {
        host.hasSuffix(".") ? String(host.dropLast()) : host
    }

    /// DNS names compare without case: one spelling, so a reload that only
    /// changes case is no change.
    private static func lowercased(_ host: String) -> String {
        String(
            decoding: host.utf8.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 + 32 : $0 },
            as: UTF8.self)
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    private static func isLabelByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }
}
