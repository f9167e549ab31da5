import Glibc
import Testing

@testable import ReaperCore

/// SocketAddress keeps IPv4 and IPv6 inline and other families on the heap:
/// what goes in through the kernel comes back out unchanged, and a connection's
/// two addresses stay small (the idle-memory figure of make bench).
@Suite struct SocketAddressTests {
    @Test func anIdleConnectionsAddressesStaySmall() {
        // sockaddr_storage alone is 128 bytes; two of them were a third of an
        // idle relayed connection.
        #expect(MemoryLayout<SocketAddress>.size <= 40)
        #expect(MemoryLayout<SocketAddress?>.size <= 40)
    }

    @Test func theKernelSeesWhatWasGiven() throws {
        for (ip, port, family) in [("127.0.0.1", UInt16(8080), AF_INET), ("::1", 5432, AF_INET6)] {
            let address = try #require(SocketAddress(ip: ip, port: port))
            let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
            try #require(fd >= 0)
            defer { close(fd) }
            let any = try #require(SocketAddress(ip: ip, port: 0))
            let bound = any.withSockaddr { bind(fd, $0, $1) }
            try #require(bound == 0)
            let (local, result) = SocketAddress.capture { getsockname(fd, $0, $1) }
            #expect(result == 0)
            #expect(local.family == family)
            #expect(local.ip == ip)
            #expect(local.port != 0)
            #expect(address.family == family && address.port == port && address.ip == ip)
        }
    }

    @Test func aUnixPathAndAnAbstractNameRoundTrip() throws {
        let path = "/tmp/reaperd-sa-\(getpid()).sock"
        unlink(path)
        defer { unlink(path) }
        let address = try #require(SocketAddress(unixPath: path))
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        try #require(address.withSockaddr { bind(fd, $0, $1) } == 0)
        let (local, result) = SocketAddress.capture { getsockname(fd, $0, $1) }
        #expect(result == 0)
        #expect(local.isUnix && local.description == "unix:\(path)" && local.port == 0)
        let abstract = try #require(SocketAddress(notifySocket: "@reaperd-sa-test"))
        #expect(abstract.isUnix && abstract.length == socklen_t(2 + "@reaperd-sa-test".utf8.count))
    }

    @Test func aFailedCaptureIsEmpty() {
        let (address, result) = SocketAddress.capture { getsockname(-1, $0, $1) }
        #expect(result < 0)
        #expect(address.family == 0 && address.length == 0 && address.port == 0)
    }

    @Test func bytesShorterThanAFamilyAreNoAddress() {
        let address = [UInt8(1)].withUnsafeBytes { SocketAddress(copying: $0) }
        #expect(address.family == 0 && address.length == 0 && address.description == "family 0")
    }

    @Test func rawAddressBytesRoundTrip() throws {
        let v4 = SocketAddress(raw: [10, 1, 2, 3], port: 443)
        #expect(v4.description == "10.1.2.3:443" && v4.rawAddress == [10, 1, 2, 3])
        let bytes: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + Array(repeating: 0, count: 11) + [1]
        let v6 = SocketAddress(raw: bytes, port: 80)
        #expect(v6.description == "[2001:db8::1]:80" && v6.rawAddress == bytes)
    }
}
