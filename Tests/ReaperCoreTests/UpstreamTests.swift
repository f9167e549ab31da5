import Testing

@testable import ReaperCore

@Suite("Upstream: an address or a host name")
struct UpstreamTests {
    private func parsed(_ text: String) -> Upstream? {
        try? Upstream.parse(text).get()
    }

    @Test func numericAddressesStayAddresses() {
        #expect(parsed("127.0.0.1:5432") == .address(.ipv4(address: "127.0.0.1", port: 5432)))
        #expect(parsed("[::1]:5432") == .address(.ipv6(address: "::1", port: 5432)))
        #expect(parsed("unix:/run/pg.sock") == .address(.unix(path: "/run/pg.sock")))
        // localhost needs no resolver: it is 127.0.0.1, as for listen.
        #expect(parsed("localhost:5432") == .address(.ipv4(address: "127.0.0.1", port: 5432)))
    }

    @Test(arguments: [
        ("db.internal:5432", "db.internal", 5432),
        ("DB.Internal:5432", "db.internal", 5432),
        ("db.internal.:5432", "db.internal", 5432),
        ("db:1", "db", 1),
        ("a-b.c-d.example:65535", "a-b.c-d.example", 65535),
        ("xn--bcher-kva.example:80", "xn--bcher-kva.example", 80),
        ("1db.example:80", "1db.example", 80),
    ])
    func names(text: String, host: String, port: Int) {
        #expect(parsed(text) == .name(host: host, port: UInt16(port)))
        #expect(parsed(text)?.description == "\(host):\(port)")
        #expect(parsed(text)?.endpoint == nil)
    }

    @Test func longestNameAndLabelAreAccepted() {
        let label = String(repeating: "a", count: Upstream.maxLabelLength)
        // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253
        let name = [label, label, label, String(repeating: "b", count: 61)].joined(separator: ".")
        #expect(name.count == Upstream.maxNameLength)
        #expect(parsed("\(name):1") == .name(host: name, port: 1))
        #expect(parsed("\(name).:1") == .name(host: name, port: 1), "a trailing dot is not counted")
        #expect(parsed("\(name)b:1") == nil)
        #expect(parsed("\(label)a.example:1") == nil)
    }

    @Test(arguments: [
        ("db.internal", "missing :PORT"),
        ("db.internal:", "port must be a number"),
        ("db.internal:65536", "port must be a number"),
        ("db.internal:5o", "port must be a number"),
        ("db_1.internal:1", "not a host name or a numeric address"),
        ("db internal:1", "not a host name or a numeric address"),
        ("d\u{e9}.example:1", "not a host name or a numeric address"),
        ("db..internal:1", "empty label"),
        (".db:1", "empty label"),
        ("-db.internal:1", "may not start or end with a hyphen"),
        ("db-.internal:1", "may not start or end with a hyphen"),
        ("999.1.1.1:1", "not a valid IPv4 address"),
        ("1.2.3:1", "not a valid IPv4 address"),
        (":1", "missing address"),
        ("db:internal:1", "in brackets"),
        ("[db.internal]:1", "not a numeric IPv6 address"),
    ])
    func refuses(text: String, messagePart: String) {
        switch Upstream.parse(text) {
        case .success(let upstream):
            Issue.record("\(text) parsed as \(upstream)")
        case .failure(let error):
            #expect(error.message.contains(messagePart), "\(error.message)")
        }
    }

    @Test func aNamedUpstreamAndResolveIntervalRoundTrip() throws {
        let text = """
            [defaults]
            resolve_interval = 2min

            [listener:pg]
            listen = 127.0.0.1:6432
            upstream = DB.Internal:5432

            [listener:fast]
            listen = 127.0.0.1:6433
            upstream = db.internal:5433
            resolve_interval = 1s

            [listener:numeric]
            listen = 127.0.0.1:6434
            upstream = 127.0.0.1:5432
            """
        let configuration = try #require(ConfigFixture.parse(text))
        let pg = try #require(configuration.listener(named: "pg"))
        #expect(pg.upstream == .name(host: "db.internal", port: 5432))
        #expect(pg.connection.resolveInterval == .seconds(120), "inherited from [defaults]")
        let fast = try #require(configuration.listener(named: "fast"))
        #expect(fast.connection.resolveInterval == .seconds(1), "the listener's own wins")
        #expect(ConnectionSettings.defaults.resolveInterval == .seconds(30))

        let printed = configuration.effectiveINI()
        #expect(printed.contains("upstream = db.internal:5432  # a host name: looked up by reaperd"))
        #expect(printed.contains("upstream = 127.0.0.1:5432\n"), "a numeric upstream carries no note")
        #expect(printed.contains("resolve_interval = 2min"))
        let again = try Configuration.parse(printed, file: "effective.conf")
        #expect(again.listeners == configuration.listeners)
        #expect(again.effectiveINI() == printed)
    }

    @Test func nameCaseIsNoChange() throws {
        let a = try #require(ConfigFixture.parse("[listener:r]\nlisten = 127.0.0.1:1\nupstream = DB.x:1\n"))
        let b = try #require(ConfigFixture.parse("[listener:r]\nlisten = 127.0.0.1:1\nupstream = db.x.:1\n"))
        #expect(a.listeners == b.listeners)
    }
}
