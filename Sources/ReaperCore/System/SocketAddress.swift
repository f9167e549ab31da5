internal import Glibc

/// A socket address as the kernel sees it.
///
/// IPv4 and IPv6 addresses sit inline in the room of a `sockaddr_in6` (28
/// bytes), anything else (a Unix socket's path, up to 110 bytes) on the heap,
/// shared by copies. Every relayed connection keeps two of these, its client
/// and its upstream: inline `sockaddr_storage` took 2 × 132 bytes of each idle
/// connection; this takes 2 × 40 (make bench, idle memory).
public struct SocketAddress: Sendable, CustomStringConvertible {
    /// An IPv4 (`sockaddr_in`, in the first 16 bytes) or IPv6 address.
    private var inet = sockaddr_in6()
    private var inetLength: UInt8 = 0
    /// Any other family; when set, `inet` is unused.
    private var other: OtherAddress?

    init() {}

    /// Copies `raw`, the bytes of a `sockaddr` of any family, `raw.count` long.
    init(copying raw: UnsafeRawBufferPointer) {
        let family = raw.count >= MemoryLayout<sa_family_t>.size ? Int32(raw.load(as: sa_family_t.self)) : 0
        if (family == AF_INET || family == AF_INET6) && raw.count <= MemoryLayout<sockaddr_in6>.size {
            withUnsafeMutableBytes(of: &inet) { $0.copyMemory(from: raw) }
            inetLength = UInt8(raw.count)
        } else if raw.count >= MemoryLayout<sa_family_t>.size {
            other = OtherAddress(bytes: Array(raw))
        }
        // Shorter than a family: no address at all (empty, family 0).
    }

    /// Copies a `sockaddr_in`, `sockaddr_in6` or `sockaddr_un` of `length` bytes.
    private init<Address>(_ address: Address, length: Int) {
        var address = address
        self = withUnsafeBytes(of: &address) {
            SocketAddress(copying: UnsafeRawBufferPointer(rebasing: $0[0..<length]))
        }
    }

    init(_ v4: sockaddr_in) { self.init(v4, length: MemoryLayout<sockaddr_in>.size) }
    init(_ v6: sockaddr_in6) { self.init(v6, length: MemoryLayout<sockaddr_in6>.size) }

    /// IPv4 or IPv6 from a numeric address; nil when the text is not one.
    public init?(ip: String, port: UInt16) {
        var v4 = sockaddr_in()
        if inet_pton(AF_INET, ip, &v4.sin_addr) == 1 {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            self.init(v4)
            return
        }
        var v6 = sockaddr_in6()
        if inet_pton(AF_INET6, ip, &v6.sin6_addr) == 1 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            self.init(v6)
            return
        }
        return nil
    }

    /// A Unix stream socket path; nil when it does not fit `sun_path`.
    public init?(unixPath: String) {
        var un = sockaddr_un()
        un.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(unixPath.utf8)
        let capacity = MemoryLayout.size(ofValue: un.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else { return nil }
        withUnsafeMutableBytes(of: &un.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        self.init(un, length: MemoryLayout<sa_family_t>.size + bytes.count + 1)
    }

    /// `$NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    public init?(notifySocket: String) {
        guard notifySocket.hasPrefix("@") else {
            self.init(unixPath: notifySocket)
            return
        }
        var un = sockaddr_un()
        un.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(notifySocket.utf8)
        bytes[0] = 0
        guard bytes.count <= MemoryLayout.size(ofValue: un.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &un.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        self.init(un, length: MemoryLayout<sa_family_t>.size + bytes.count)
    }

    /// The address's bytes: all of the inline room for IPv4 and IPv6 (so a
    /// `sockaddr_in6` can be loaded), exactly `length` otherwise.
    private func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        if let other { return other.bytes.withUnsafeBytes(body) }
        return withUnsafeBytes(of: inet, body)
    }

    var length: socklen_t { socklen_t(other?.bytes.count ?? Int(inetLength)) }

    public var family: Int32 {
        if let other { return other.family }
        return inetLength == 0 ? 0 : Int32(inet.sin6_family)
    }

    public var isUnix: Bool { family == AF_UNIX }

    /// The port of an IPv4 or IPv6 address, 0 otherwise.
    public var port: UInt16 {
        withBytes { raw in
            switch family {
            case AF_INET: UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
            case AF_INET6: UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
            default: 0
            }
        }
    }

    /// "1.2.3.4:80", "[::1]:80" or "unix:/path" — the form config files use.
    public var description: String {
        withBytes { raw -> String in
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            switch family {
            case AF_INET:
                var address = raw.load(as: sockaddr_in.self)
                inet_ntop(AF_INET, &address.sin_addr, &text, socklen_t(text.count))
                return
                    "\(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)):\(UInt16(bigEndian: address.sin_port))"
            case AF_INET6:
                var address = raw.load(as: sockaddr_in6.self)
                inet_ntop(AF_INET6, &address.sin6_addr, &text, socklen_t(text.count))
                return
                    "[\(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))]:\(UInt16(bigEndian: address.sin6_port))"
            case AF_UNIX:
                let pathOffset = MemoryLayout<sa_family_t>.size
                let end = Int(length)
                guard end > pathOffset else { return "unix:" }
                var bytes = Array(raw[pathOffset..<min(end, raw.count)])
                if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
                return "unix:" + String(decoding: bytes, as: UTF8.self)
            default:
                return "family \(family)"
            }
        }
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        let length = length
        return withBytes { raw in body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }

    /// Runs `body` (accept4, getsockname, getpeername) with room for any address,
    /// and keeps what the kernel wrote there; empty when it failed.
    static func capture(
        _ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
    ) -> (SocketAddress, Int32) {
        var storage = sockaddr_storage()
        let room = MemoryLayout<sockaddr_storage>.size
        var length = socklen_t(room)
        return withUnsafeMutableBytes(of: &storage) { raw in
            let result = body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
            guard result >= 0 else { return (SocketAddress(), result) }
            return (SocketAddress(copying: UnsafeRawBufferPointer(rebasing: raw[0..<min(Int(length), room)])), result)
        }
    }
}

/// A socket address of a family other than IPv4 and IPv6, on the heap.
private final class OtherAddress: Sendable {
    let bytes: [UInt8]
    let family: Int32

    init(bytes: [UInt8]) {
        self.bytes = bytes
        family = bytes.withUnsafeBytes { Int32($0.load(as: sa_family_t.self)) }
    }
}
