internal import Glibc

/// The PROXY protocol header (HAProxy's specification, versions 1 and 2): the
/// client's own address, sent ahead of the first byte by a proxy so the server
/// behind it sees who connected rather than the proxy.
///
/// Pure bytes in, bytes out; `ProxyHeaderReader` takes it off a socket.
public struct ProxyHeader: Sendable {
    /// The client (source) and the address it connected to (destination); nil
    /// for `UNKNOWN` (v1) and `LOCAL` or a non-TCP family (v2), where the
    /// specification says to use the connection's own addresses.
    public var source: SocketAddress?
    public var destination: SocketAddress?

    /// Longest version 1 header: `PROXY TCP6 ` with two full IPv6 addresses and ports, CRLF.
    public static let maxVersion1Length = 107
    /// Longest version 2 header reaperd accepts: 16 fixed bytes, the addresses and
    /// up to this much of TLVs (load balancers send tens of bytes; 4 KiB bounds
    /// what one client may make reaperd hold before it is known to be anything).
    public static let maxVersion2Length = 16 + 4096
    /// The version 2 signature, the first 12 bytes.
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let version1Prefix = Array("PROXY ".utf8)

    public init(source: SocketAddress?, destination: SocketAddress?) {
        self.source = source
        self.destination = destination
    }

    /// What a prefix of a client's first bytes says.
    public enum Parse {
        /// A valid header of `length` bytes, the first `length` of those given.
        case complete(ProxyHeader, length: Int)
        /// Every byte given belongs to the header, which is longer: read more.
        case incomplete
        /// Not a PROXY header, or a malformed one; the reason is for the log.
        case invalid(String)
    }

    /// Parses the start of `bytes`. Returns `.incomplete` only when a valid
    /// header would be longer than `bytes`, so a reader may consume all of them
    /// and never takes a byte of the client's data.
    public static func parse(_ bytes: ArraySlice<UInt8>) -> Parse {
        let bytes = Array(bytes)
        let v2 = bytes.count >= signature.count ? Array(bytes.prefix(signature.count)) == signature : false
        if v2 { return parseVersion2(bytes) }
        if bytes.count < signature.count && signature.starts(with: bytes) && !bytes.isEmpty { return .incomplete }
        if bytes.count < version1Prefix.count {
            return version1Prefix.starts(with: bytes) ? .incomplete : .invalid("not a PROXY protocol header")
        }
        guard bytes.starts(with: version1Prefix) else { return .invalid("not a PROXY protocol header") }
        return parseVersion1(bytes)
    }

    // MARK: Version 1: `PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n`

    private static func parseVersion1(_ bytes: [UInt8]) -> Parse {
        guard let newline = bytes.prefix(maxVersion1Length).firstIndex(of: UInt8(ascii: "\n")) else {
            return bytes.count >= maxVersion1Length
                ? .invalid("PROXY v1 header without CRLF in its first \(maxVersion1Length) bytes") : .incomplete
        }
        guard newline > 0, bytes[newline - 1] == UInt8(ascii: "\r") else {
            return .invalid("PROXY v1 header ends in LF without CR")
        }
        let line = String(decoding: bytes[version1Prefix.count..<(newline - 1)], as: UTF8.self)
        let words = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        let length = newline + 1
        switch words.first {
        case "UNKNOWN":
            return .complete(ProxyHeader(source: nil, destination: nil), length: length)
        case "TCP4", "TCP6":
            guard words.count == 5 else {
                return .invalid("PROXY v1 \(words[0]) needs source, destination and two ports")
            }
            let family = words[0] == "TCP4" ? AF_INET : AF_INET6
            guard let sourcePort = port(words[3]), let destinationPort = port(words[4]) else {
                return .invalid("PROXY v1 port is not a decimal number 0 ... 65535")
            }
            guard let source = SocketAddress(ip: words[1], port: sourcePort, family: family),
                let destination = SocketAddress(ip: words[2], port: destinationPort, family: family)
            else {
                return .invalid("PROXY v1 address is not a numeric \(words[0] == "TCP4" ? "IPv4" : "IPv6") address")
            }
            return .complete(ProxyHeader(source: source, destination: destination), length: length)
        default:
            return .invalid("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN")
        }
    }

    /// Decimal, no sign, no leading zero (the specification's form), 0 ... 65535.
    private static func port(_ text: String) -> UInt16? {
        guard !text.isEmpty, text.utf8.count <= 5, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
            text == "0" || !text.hasPrefix("0")
        else { return nil }
        return UInt16(text)
    }

    // MARK: Version 2: signature, version and command, family, length, addresses, TLVs

    private static func parseVersion2(_ bytes: [UInt8]) -> Parse {
        guard bytes.count >= 16 else { return .incomplete }
        let version = bytes[12] >> 4
        let command = bytes[12] & 0x0F
        guard version == 2 else { return .invalid("PROXY v2 header of version \(version)") }
        guard command <= 1 else { return .invalid("PROXY v2 command \(command) is neither LOCAL nor PROXY") }
        let addressLength = Int(bytes[14]) << 8 | Int(bytes[15])
        let length = 16 + addressLength
        guard length <= maxVersion2Length else {
            return .invalid("PROXY v2 header of \(length) bytes is longer than \(maxVersion2Length)")
        }
        guard bytes.count >= length else { return .incomplete }
        // LOCAL: the proxy's own connection (a health check); the addresses are the socket's.
        guard command == 1 else { return .complete(ProxyHeader(source: nil, destination: nil), length: length) }
        let family = bytes[13] >> 4
        let transport = bytes[13] & 0x0F
        let block = bytes[16..<length]
        switch (family, transport) {
        case (1, 1):
            guard block.count >= 12 else { return .invalid("PROXY v2 TCP over IPv4 with \(block.count) address bytes") }
            let base = block.startIndex
            let source = SocketAddress(raw: Array(block[base..<base + 4]), port: port(block, at: base + 8))
            let destination = SocketAddress(raw: Array(block[base + 4..<base + 8]), port: port(block, at: base + 10))
            return .complete(ProxyHeader(source: source, destination: destination), length: length)
        case (2, 1):
            guard block.count >= 36 else { return .invalid("PROXY v2 TCP over IPv6 with \(block.count) address bytes") }
            let base = block.startIndex
            let source = SocketAddress(raw: Array(block[base..<base + 16]), port: port(block, at: base + 32))
            let destination = SocketAddress(
                raw: Array(block[base + 16..<base + 32]), port: port(block, at: base + 34))
            return .complete(ProxyHeader(source: source, destination: destination), length: length)
        case (0...3, 0...2):
            // UNSPEC, UDP, or Unix sockets: nothing a TCP connection can stand for.
            return .complete(ProxyHeader(source: nil, destination: nil), length: length)
        default:
            return .invalid("PROXY v2 address family \(family), transport \(transport) is unknown")
        }
    }

    private static func port(_ bytes: ArraySlice<UInt8>, at index: Int) -> UInt16 {
        UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
    }

    // MARK: Sending

    /// The header for `version` (`.off` is empty). Without both addresses, or with
    /// two of different families, v1 says `UNKNOWN` and v2 `LOCAL`: the upstream
    /// then uses the connection's own addresses.
    public func encoded(_ version: ProxyProtocolVersion) -> [UInt8] {
        let addresses: (SocketAddress, SocketAddress)? =
            if let source, let destination, source.family == destination.family,
                source.family == AF_INET || source.family == AF_INET6
            { (source, destination) } else { nil }
        switch version {
        case .off:
            return []
        case .v1:
            guard let (source, destination) = addresses else { return Array("PROXY UNKNOWN\r\n".utf8) }
            let tcp = source.family == AF_INET ? "TCP4" : "TCP6"
            return Array("PROXY \(tcp) \(source.ip) \(destination.ip) \(source.port) \(destination.port)\r\n".utf8)
        case .v2:
            var bytes = Self.signature
            guard let (source, destination) = addresses else {
                bytes += [0x20, 0x00, 0x00, 0x00]
                return bytes
            }
            let raw = source.rawAddress + destination.rawAddress
            let length = raw.count + 4
            bytes += [0x21, source.family == AF_INET ? 0x11 : 0x21, UInt8(length >> 8), UInt8(length & 0xFF)]
            bytes += raw
            bytes += [UInt8(source.port >> 8), UInt8(source.port & 0xFF)]
            bytes += [UInt8(destination.port >> 8), UInt8(destination.port & 0xFF)]
            return bytes
        }
    }
}

extension SocketAddress {
    /// From a numeric address of the given family only (a v1 `TCP4` line must
    /// not carry an IPv6 address).
    init?(ip: String, port: UInt16, family: Int32) {
        guard let address = SocketAddress(ip: ip, port: port), address.family == family else { return nil }
        self = address
    }

    /// From 4 (IPv4) or 16 (IPv6) address bytes in network order.
    init(raw: [UInt8], port: UInt16) {
        if raw.count == 4 {
            var v4 = sockaddr_in()
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &v4.sin_addr) { $0.copyBytes(from: raw) }
            self.init(v4)
        } else {
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &v6.sin6_addr) { $0.copyBytes(from: raw.prefix(16)) }
            self.init(v6)
        }
    }

    /// The address bytes in network order: 4 for IPv4, 16 for IPv6, none otherwise.
    var rawAddress: [UInt8] {
        withSockaddr { address, _ in
            switch family {
            case AF_INET:
                UnsafeRawPointer(address).withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                    withUnsafeBytes(of: v4.pointee.sin_addr) { Array($0) }
                }
            case AF_INET6:
                UnsafeRawPointer(address).withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                    withUnsafeBytes(of: v6.pointee.sin6_addr) { Array($0) }
                }
            default: []
            }
        }
    }

    /// The numeric address without port or brackets, as `inet_ntop` prints it.
    var ip: String {
        let text = description
        switch family {
        case AF_INET: return String(text[..<(text.lastIndex(of: ":") ?? text.endIndex)])
        case AF_INET6: return String(text.dropFirst().prefix { $0 != "]" })
        default: return text
        }
    }
}
