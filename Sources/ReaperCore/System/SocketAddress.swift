internal import Glibc

/// A socket address as the kernel sees it: `sockaddr_storage` plus its length.
public struct SocketAddress: Sendable, CustomStringConvertible {
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    init() {}

    /// IPv4 or IPv6 from a numeric address; nil when the text is not one.
    public init?(ip: String, port: UInt16) {
        var v4 = sockaddr_in()
        if inet_pton(AF_INET, ip, &v4.sin_addr) == 1 {
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &storage) { raw in
                raw.storeBytes(of: v4, as: sockaddr_in.self)
            }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            return
        }
        var v6 = sockaddr_in6()
        if inet_pton(AF_INET6, ip, &v6.sin6_addr) == 1 {
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &storage) { raw in
                raw.storeBytes(of: v6, as: sockaddr_in6.self)
            }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
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
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.storeBytes(of: un, as: sockaddr_un.self)
        }
        length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
    }

    /// `$NOTIFY_SOCKET`: a path, or `@name` for an abstract socket.
    public init?(notifySocket: String) {
        guard notifySocket.hasPrefix("@") else {
            self.init(unixPath: notifySocket)
            return
        }
        self.init()
        var un = sockaddr_un()
        un.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(notifySocket.utf8)
        bytes[0] = 0
        guard bytes.count <= MemoryLayout.size(ofValue: un.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &un.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.storeBytes(of: un, as: sockaddr_un.self)
        }
        length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
    }

    public var family: Int32 { Int32(storage.ss_family) }

    public var isUnix: Bool { family == AF_UNIX }

    /// The port of an IPv4 or IPv6 address, 0 otherwise.
    public var port: UInt16 {
        withUnsafeBytes(of: storage) { raw in
            switch family {
            case AF_INET: UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
            case AF_INET6: UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
            default: 0
            }
        }
    }

    /// "1.2.3.4:80", "[::1]:80" or "unix:/path" — the form config files use.
    public var description: String {
        withUnsafeBytes(of: storage) { raw -> String in
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
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    static func capture(
        _ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
    ) -> (SocketAddress, Int32) {
        var address = SocketAddress()
        address.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutableBytes(of: &address.storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &address.length)
        }
        return (address, result)
    }
}
