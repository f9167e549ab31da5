import Glibc

/// A socket address as the configuration writes it: where a listener binds, where a
/// relay connects, where the metrics page listens.
///
/// Only numeric addresses are accepted (binding by name would make start-up wait on
/// DNS); the one name understood is `localhost`, which means `127.0.0.1`. An
/// upstream may also be a host name: see `Upstream`. Addresses are stored in
/// the canonical form `inet_ntop` prints, so two spellings of one address compare
/// equal and `description` parses back to the same value.
public enum Endpoint: Hashable, Sendable, CustomStringConvertible {
    /// A numeric IPv4 address and port, written `127.0.0.1:80`.
    case ipv4(address: String, port: UInt16)
    /// A numeric IPv6 address and port, written `[::1]:80`; the address is stored without brackets.
    case ipv6(address: String, port: UInt16)
    /// A Unix stream socket, written `unix:/run/x.sock`; the path is absolute.
    case unix(path: String)

    /// The longest Unix socket path in bytes: `sun_path` holds 108 bytes including the final NUL.
    public static let maxUnixPathBytes = 107

    /// Parses `HOST:PORT`, `[V6]:PORT` or `unix:/PATH`.
    ///
    /// Port 0 is accepted here because a listener may bind an ephemeral port; callers
    /// that need a real port (upstream, metrics) check `port` themselves.
    public static func parse(_ text: String) -> Result<Endpoint, EndpointParseError> {
        if text.hasPrefix("unix:") {
            return parseUnix(path: String(text.dropFirst("unix:".count)), text: text)
        }
        if text.hasPrefix("[") {
            return parseBracketed(text)
        }
        return parseHostPort(text)
    }

    /// The text form `parse` accepts: `127.0.0.1:80`, `[::1]:80`, `unix:/run/x.sock`.
    public var description: String {
        switch self {
        case .ipv4(let address, let port): "\(address):\(port)"
        case .ipv6(let address, let port): "[\(address)]:\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }

    /// Whether this is a Unix socket path rather than a TCP address.
    public var isUnix: Bool {
        if case .unix = self { true } else { false }
    }

    /// The TCP port, or nil for a Unix socket.
    public var port: UInt16? {
        switch self {
        case .ipv4(_, let port), .ipv6(_, let port): port
        case .unix: nil
        }
    }

    private static func parseUnix(path: String, text: String) -> Result<Endpoint, EndpointParseError> {
        guard path.hasPrefix("/") else {
            return .failure(EndpointParseError("\(text): a unix socket path must be absolute (unix:/path)"))
        }
        guard path.utf8.count <= maxUnixPathBytes else {
            return .failure(
                EndpointParseError("\(text): unix socket path is longer than \(maxUnixPathBytes) bytes"))
        }
        guard !path.utf8.contains(0) else {
            return .failure(EndpointParseError("unix socket path contains a NUL byte"))
        }
        return .success(.unix(path: path))
    }

    private static func parseBracketed(_ text: String) -> Result<Endpoint, EndpointParseError> {
        guard let close = text.firstIndex(of: "]") else {
            return .failure(EndpointParseError("\(text): missing ] after the IPv6 address"))
        }
        let host = text[text.index(after: text.startIndex)..<close]
        let rest = text[text.index(after: close)...]
        guard rest.first == ":" else {
            return .failure(EndpointParseError("\(text): missing :PORT after [ADDRESS]"))
        }
        guard let address = canonicalAddress(String(host), family: AF_INET6) else {
            return .failure(EndpointParseError("\(text): \(host) is not a numeric IPv6 address"))
        }
        return parsePort(rest.dropFirst(), text: text).map { .ipv6(address: address, port: $0) }
    }

    private static func parseHostPort(_ text: String) -> Result<Endpoint, EndpointParseError> {
        guard let colon = text.lastIndex(of: ":") else {
            return .failure(EndpointParseError("\(text): missing :PORT (write HOST:PORT, [V6]:PORT or unix:/PATH)"))
        }
        let host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        if host.isEmpty {
            return .failure(EndpointParseError("\(text): missing address before :PORT"))
        }
        if host.contains(":") {
            return .failure(EndpointParseError("\(text): write IPv6 addresses in brackets, e.g. [::1]:80"))
        }
        let address: String
        if host == "localhost" {
            address = "127.0.0.1"
        } else if let canonical = canonicalAddress(host, family: AF_INET) {
            address = canonical
        } else {
            return .failure(
                EndpointParseError(
                    "\(text): \(host) is not a numeric IPv4 address (only upstream = takes a host name; this address must be numeric)"
                ))
        }
        return parsePort(portText, text: text).map { .ipv4(address: address, port: $0) }
    }

    private static func parsePort(_ digits: Substring, text: String) -> Result<UInt16, EndpointParseError> {
        let isNumber =
            !digits.isEmpty && digits.utf8.count <= 5
            && digits.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        guard isNumber, let port = Int(digits), port <= Int(UInt16.max) else {
            return .failure(EndpointParseError("\(text): the port must be a number from 0 to 65535"))
        }
        return .success(UInt16(port))
    }

    /// Validates a numeric address with `inet_pton` and returns the form `inet_ntop` prints.
    private static func canonicalAddress(_ host: String, family: Int32) -> String? {
        guard !host.utf8.contains(0) else { return nil }
        var storage = in6_addr()  // large enough for either family
        guard unsafe inet_pton(family, host, &storage) == 1 else { return nil }
        var buffer = [CChar](repeating: 0, count: 64)
        guard unsafe inet_ntop(family, &storage, &buffer, socklen_t(buffer.count)) != nil else { return nil }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Why a text is not an `Endpoint`; `message` is written for the operator and names the text.
public struct EndpointParseError: Error, Sendable, Hashable {
    /// A one-line explanation, e.g. `10.0.0.1: missing :PORT ...`.
    public var message: String

    public init(_ message: String) {
        self.message = message
    }
}
