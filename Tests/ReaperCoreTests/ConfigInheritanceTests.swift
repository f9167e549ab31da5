import ReaperCore
import Testing

@Suite("Configuration: [defaults] inheritance")
struct ConfigInheritanceTests {
    @Test func listenerOverridesOnlyWhatItSets() throws {
        let text = """
            [defaults]
            keepalive_idle = 30s
            keepalive_count = 5
            backlog = 100

            [listener:plain]
            upstream = 127.0.0.1:5432

            [listener:tuned]
            upstream = 127.0.0.1:5433
            keepalive_idle = 2min
            reuse_port = yes
            """
        let configuration = try #require(ConfigFixture.parse(text))
        #expect(configuration.defaults.keepaliveIdle == 30)
        #expect(configuration.defaults.keepaliveCount == 5)
        #expect(configuration.defaults.backlog == 100)
        #expect(!configuration.defaults.reusePort)

        let plain = try #require(configuration.listener(named: "plain")).connection
        #expect(plain == configuration.defaults)

        let tuned = try #require(configuration.listener(named: "tuned")).connection
        #expect(tuned.keepaliveIdle == 120, "listener override wins")
        #expect(tuned.reusePort, "listener override wins")
        #expect(tuned.keepaliveCount == 5, "inherited from [defaults]")
        #expect(tuned.backlog == 100, "inherited from [defaults]")
        #expect(tuned.connectTimeout == .seconds(5), "built-in default when neither sets it")
    }

    @Test func defaultsSectionAfterTheListenersStillApplies() throws {
        let text = """
            [listener:early]
            mode = echo
            keepalive_interval = 20s

            [defaults]
            keepalive_interval = 5s
            idle_timeout = 10min
            """
        let configuration = try #require(ConfigFixture.parse(text))
        let early = try #require(configuration.listener(named: "early")).connection
        #expect(early.idleTimeout == .seconds(600), "inherited from a later [defaults]")
        #expect(early.keepaliveInterval == 20, "the listener's own value beats a later [defaults]")
        #expect(configuration.defaults.keepaliveInterval == 5)
    }

    @Test func listenersKeepFileOrder() throws {
        let text = """
            [listener:zeta]
            mode = echo
            [daemon]
            [listener:alpha]
            mode = echo
            [listener:mid]
            mode = echo
            """
        #expect(ConfigFixture.parse(text)?.listeners.map(\.name) == ["zeta", "alpha", "mid"])
    }

    @Test func invalidDefaultIsReportedOnceNotPerListener() {
        let text = """
            [defaults]
            backlog = lots
            [listener:a]
            mode = echo
            [listener:b]
            mode = echo
            """
        #expect(ConfigFixture.diagnostics(text).map(\.line) == [2])
    }

    @Test func listenerLineIsIgnoredByEquality() throws {
        let a = try #require(ConfigFixture.parse("[listener:x]\nmode = echo\n"))
        let b = try #require(ConfigFixture.parse("# moved down\n\n[listener:x]\nmode = echo\n"))
        #expect(a.listeners[0].line == 1)
        #expect(b.listeners[0].line == 3)
        #expect(a == b, "moving a section is not a change on reload")
        #expect(Set(a.listeners).count == Set(a.listeners + b.listeners).count)
    }

    @Test func syntaxDetails() throws {
        let text =
            "\u{FEFF}; leading comment\r\n"
            + "   # indented comment\r\n"
            + "\t[ listener:x ]   ; trailing comment\r\n"
            + "mode=echo\r\n"
            + "  listen   =   127.0.0.1:1 ,127.0.0.1:2\t# two\r\n"
            + "\r\n"
            + "[daemon]\n"
            + "control_socket = /run/a#b;c\n"
        let configuration = try #require(ConfigFixture.parse(text))
        let listener = try #require(configuration.listener(named: "x"))
        #expect(listener.line == 3)
        #expect(listener.mode == .echo)
        #expect(listener.listen == [.ipv4(address: "127.0.0.1", port: 1), .ipv4(address: "127.0.0.1", port: 2)])
        #expect(configuration.daemon.controlSocket == "/run/a#b;c", "# and ; without whitespace before are data")
    }
}
