import ReaperCore
import Testing

@Suite("Endpoint parsing")
struct EndpointTests {
    private func parsed(_ text: String) -> Endpoint? {
        try? Endpoint.parse(text).get()
    }

    @Test func ipv4() {
        #expect(parsed("127.0.0.1:80") == .ipv4(address: "127.0.0.1", port: 80))
        #expect(parsed("0.0.0.0:6432") == .ipv4(address: "0.0.0.0", port: 6432))
        #expect(parsed("10.1.2.3:65535") == .ipv4(address: "10.1.2.3", port: 65535))
    }

    @Test func localhostMeansLoopbackV4() {
        #expect(parsed("localhost:7070") == .ipv4(address: "127.0.0.1", port: 7070))
    }

    @Test func ipv6StoredWithoutBracketsInCanonicalForm() {
        #expect(parsed("[::1]:80") == .ipv6(address: "::1", port: 80))
        #expect(parsed("[::]:6432") == .ipv6(address: "::", port: 6432))
        #expect(parsed("[0:0:0:0:0:0:0:1]:443") == .ipv6(address: "::1", port: 443))
        #expect(parsed("[2001:DB8::1]:5432") == .ipv6(address: "2001:db8::1", port: 5432))
        #expect(parsed("[::ffff:10.0.0.1]:1") == .ipv6(address: "::ffff:10.0.0.1", port: 1))
    }

    @Test func unixPath() {
        #expect(parsed("unix:/run/pg/.s.PGSQL.5432") == .unix(path: "/run/pg/.s.PGSQL.5432"))
        let longest = "/" + String(repeating: "a", count: Endpoint.maxUnixPathBytes - 1)
        #expect(parsed("unix:" + longest) == .unix(path: longest))
    }

    @Test func portZeroParsesForEphemeralListeners() {
        #expect(parsed("127.0.0.1:0") == .ipv4(address: "127.0.0.1", port: 0))
        #expect(parsed("127.0.0.1:0")?.port == 0)
    }

    @Test func isUnixAndPort() {
        #expect(parsed("unix:/x")?.isUnix == true)
        #expect(parsed("unix:/x")?.port == nil)
        #expect(parsed("[::1]:9")?.isUnix == false)
        #expect(parsed("[::1]:9")?.port == 9)
        #expect(parsed("1.2.3.4:9")?.isUnix == false)
    }

    @Test(arguments: [
        ("127.0.0.1:80", "127.0.0.1:80"),
        ("localhost:80", "127.0.0.1:80"),
        ("[::1]:80", "[::1]:80"),
        ("[0::0:1]:80", "[::1]:80"),
        ("unix:/run/x.sock", "unix:/run/x.sock"),
    ])
    func descriptionRoundTrips(text: String, expected: String) throws {
        let endpoint = try Endpoint.parse(text).get()
        #expect(endpoint.description == expected)
        #expect(try Endpoint.parse(endpoint.description).get() == endpoint)
    }

    @Test(arguments: [
        ("", "missing :PORT"),
        ("127.0.0.1", "missing :PORT"),
        (":80", "missing address"),
        ("::1:80", "in brackets"),
        ("db.example.com:5432", "this address must be numeric"),
        ("256.1.1.1:80", "not a numeric IPv4 address"),
        ("1.2.3:80", "not a numeric IPv4 address"),
        (" 127.0.0.1:80", "not a numeric IPv4 address"),
        ("127.0.0.1:65536", "port must be a number from 0 to 65535"),
        ("127.0.0.1:", "port must be a number"),
        ("127.0.0.1:-1", "port must be a number"),
        ("127.0.0.1:+80", "port must be a number"),
        ("127.0.0.1:8o", "port must be a number"),
        ("127.0.0.1:0000080", "port must be a number"),
        ("[::1]80", "missing :PORT after [ADDRESS]"),
        ("[::1:80", "missing ]"),
        ("[127.0.0.1]:80", "not a numeric IPv6 address"),
        ("[fe80::1%eth0]:80", "not a numeric IPv6 address"),
        ("[localhost]:80", "not a numeric IPv6 address"),
        ("unix:run/x.sock", "must be absolute"),
        ("unix:", "must be absolute"),
        ("unix:/" + String(repeating: "a", count: 107), "longer than 107 bytes"),
    ])
    func rejects(text: String, messagePart: String) {
        switch Endpoint.parse(text) {
        case .success(let endpoint):
            Issue.record("\(text) parsed as \(endpoint)")
        case .failure(let error):
            #expect(error.message.contains(messagePart), "\(error.message)")
        }
    }
}
