internal import Glibc

/// Why a host name lookup gave no address: getaddrinfo's own code and text.
public struct LookupError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An `EAI_*` code, e.g. `EAI_NONAME`, `EAI_AGAIN`.
    public let code: Int32
    /// `gai_strerror`'s text, and errno's for `EAI_SYSTEM`.
    public let message: String

    public var description: String { message }
}

/// Host names to socket addresses, with getaddrinfo(3). It blocks for as long
/// as the resolver takes (resolv.conf's `timeout` × `attempts` per server when
/// it does not answer): call it only off the loop (`Resolver`).
enum AddressLookup {
    /// TCP addresses for `host` and `port`: IPv4 and IPv6 (A and AAAA), in the
    /// order getaddrinfo sorts them (RFC 6724 and /etc/gai.conf), each once.
    /// No AI_ADDRCONFIG: it drops a family when only loopback carries it,
    /// and a relay to a local service in a network namespace is ordinary.
    /// The corresponding C function is `getaddrinfo`.
    static func tcpAddresses(host: String, port: UInt16) -> Result<[SocketAddress], LookupError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_protocol = Int32(IPPROTO_TCP)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let code = getaddrinfo(host, "\(port)", &hints, &list)
        guard code == 0 else {
            var message = gai_strerror(code).map { String(cString: $0) } ?? "getaddrinfo error \(code)"
            if code == EAI_SYSTEM { message += ": \(Errno(Glibc.errno))" }
            return .failure(LookupError(code: code, message: message))
        }
        defer { freeaddrinfo(list) }
        var addresses: [SocketAddress] = []
        var next = list
        while let entry = next {
            next = entry.pointee.ai_next
            let family = entry.pointee.ai_family
            guard family == AF_INET || family == AF_INET6, let raw = entry.pointee.ai_addr else { continue }
            let length = Int(entry.pointee.ai_addrlen)
            guard length <= MemoryLayout<sockaddr_storage>.size else { continue }
            let address = SocketAddress(copying: UnsafeRawBufferPointer(start: raw, count: length))
            if !addresses.contains(where: { $0.description == address.description }) { addresses.append(address) }
        }
        guard !addresses.isEmpty else {
            return .failure(LookupError(code: EAI_NONAME, message: "no IPv4 or IPv6 address"))
        }
        return .success(addresses)
    }
}
