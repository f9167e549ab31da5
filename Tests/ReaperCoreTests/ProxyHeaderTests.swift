import Testing

@testable import ReaperCore

/// The PROXY protocol (HAProxy's proxy-protocol.txt), both versions, both ways.
@Suite("PROXY protocol header")
struct ProxyHeaderTests {
    private func address(_ ip: String, _ port: UInt16) -> SocketAddress { SocketAddress(ip: ip, port: port)! }

    private func complete(_ bytes: [UInt8]) -> (source: String?, destination: String?, length: Int)? {
        guard case .complete(let header, let length) = ProxyHeader.parse(bytes[...]) else { return nil }
        return (header.source.map { "\($0)" }, header.destination.map { "\($0)" }, length)
    }

    private func invalid(_ bytes: [UInt8]) -> String? {
        if case .invalid(let why) = ProxyHeader.parse(bytes[...]) { return why }
        return nil
    }

    @Test func version1RoundTripsBothFamiliesAndStopsAtTheLine() throws {
        let four = ProxyHeader(source: address("192.0.2.7", 51000), destination: address("198.18.0.1", 6432))
        let line = four.encoded(.v1)
        #expect(String(decoding: line, as: UTF8.self) == "PROXY TCP4 192.0.2.7 198.18.0.1 51000 6432\r\n")
        let parsed = try #require(complete(line + Array("SELECT 1".utf8)))
        #expect(parsed.source == "192.0.2.7:51000" && parsed.destination == "198.18.0.1:6432")
        #expect(parsed.length == line.count)

        let six = ProxyHeader(source: address("2001:db8::7", 1), destination: address("::1", 65535))
        #expect(String(decoding: six.encoded(.v1), as: UTF8.self) == "PROXY TCP6 2001:db8::7 ::1 1 65535\r\n")
        #expect(complete(six.encoded(.v1))?.source == "[2001:db8::7]:1")

        let longest = ProxyHeader(
            source: address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
            destination: address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535))
        #expect(longest.encoded(.v1).count == 104 && 104 <= ProxyHeader.maxVersion1Length)
    }

    @Test func version2RoundTripsBothFamiliesAndSkipsTLVs() throws {
        let four = ProxyHeader(source: address("192.0.2.7", 51000), destination: address("198.18.0.1", 6432))
        let bytes = four.encoded(.v2)
        #expect(bytes.count == 16 + 12)
        #expect(Array(bytes[12..<16]) == [0x21, 0x11, 0x00, 0x0C])
        let parsed = try #require(complete(bytes + [1, 2, 3]))
        #expect(parsed.source == "192.0.2.7:51000" && parsed.destination == "198.18.0.1:6432" && parsed.length == 28)

        let six = ProxyHeader(source: address("2001:db8::7", 443), destination: address("::1", 5432)).encoded(.v2)
        #expect(six.count == 16 + 36 && six[13] == 0x21)
        #expect(complete(six)?.destination == "[::1]:5432")

        // A TLV (here an AWS-style VPC endpoint id, type 0xEA) is counted in the length and skipped.
        var withTLV = bytes
        let tlv: [UInt8] = [0xEA, 0x00, 0x05] + Array("vpce1".utf8)
        withTLV[15] = UInt8(12 + tlv.count)
        withTLV += tlv
        #expect(complete(withTLV + Array("data".utf8))?.length == 28 + tlv.count)
    }

    @Test func unknownAndLocalMeanTheConnectionsOwnAddresses() throws {
        #expect(try #require(complete(Array("PROXY UNKNOWN\r\n".utf8))).source == nil)
        #expect(try #require(complete(Array("PROXY UNKNOWN 1.2.3.4 x y z\r\n".utf8))).length == 29)
        let local = ProxyHeader(source: nil, destination: nil).encoded(.v2)
        #expect(Array(local[12...]) == [0x20, 0x00, 0x00, 0x00])
        #expect(try #require(complete(local)).source == nil)
        #expect(
            String(decoding: ProxyHeader(source: nil, destination: nil).encoded(.v1), as: UTF8.self)
                == "PROXY UNKNOWN\r\n")
        // Mixed families cannot be one TCP connection's: say UNKNOWN rather than lie.
        let mixed = ProxyHeader(source: address("192.0.2.7", 1), destination: address("::1", 2))
        #expect(String(decoding: mixed.encoded(.v1), as: UTF8.self) == "PROXY UNKNOWN\r\n")
        #expect(ProxyHeader(source: nil, destination: nil).encoded(.off).isEmpty)
    }

    /// `.incomplete` is a promise the reader relies on: every byte given belongs
    /// to the header. Every strict prefix of a valid header is incomplete, so the
    /// bytes after a header are never taken with it, however it was split.
    @Test func everyStrictPrefixIsIncomplete() {
        let headers = [
            ProxyHeader(source: address("192.0.2.7", 51000), destination: address("198.18.0.1", 6432)).encoded(.v1),
            ProxyHeader(source: address("2001:db8::7", 443), destination: address("::1", 5432)).encoded(.v2),
            ProxyHeader(source: nil, destination: nil).encoded(.v1),
            ProxyHeader(source: nil, destination: nil).encoded(.v2),
        ]
        for header in headers {
            for cut in 0..<header.count {
                guard case .incomplete = ProxyHeader.parse(header[0..<cut]) else {
                    Issue.record("prefix of \(cut) of \(header.count) bytes is not incomplete")
                    continue
                }
            }
            #expect(complete(header + [0x0A, 0x0D])?.length == header.count)
        }
    }

    @Test func malformedHeadersAreRefusedWithAReason() {
        #expect(invalid(Array("GET / HTTP/1.1\r\n".utf8)) == "not a PROXY protocol header")
        #expect(invalid(Array("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".utf8))?.contains("without CR") == true)
        #expect(invalid(Array("PROXY TCP4 ::1 ::1 1 2\r\n".utf8))?.contains("IPv4") == true)
        #expect(invalid(Array("PROXY TCP6 1.2.3.4 ::1 1 2\r\n".utf8))?.contains("IPv6") == true)
        #expect(invalid(Array("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".utf8))?.contains("port") == true)
        #expect(invalid(Array("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n".utf8))?.contains("port") == true)
        #expect(invalid(Array("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".utf8))?.contains("two ports") == true)
        #expect(invalid(Array("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n".utf8))?.contains("TCP4") == true)
        #expect(invalid(Array("PROXY TCP4 ".utf8) + [UInt8](repeating: 0x31, count: 120))?.contains("CRLF") == true)

        var v2 = ProxyHeader(source: address("192.0.2.7", 1), destination: address("192.0.2.8", 2)).encoded(.v2)
        v2[12] = 0x11
        #expect(invalid(v2)?.contains("version 1") == true)
        v2[12] = 0x22
        #expect(invalid(v2)?.contains("command 2") == true)
        v2[12] = 0x21
        v2[15] = 8
        #expect(invalid(Array(v2.prefix(24)))?.contains("8 address bytes") == true)
        v2[14] = 0xFF
        #expect(invalid(v2)?.contains("longer than") == true)
    }
}
