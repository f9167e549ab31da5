import ReaperCore
import Testing

@Suite("Configuration: every key")
struct ConfigKeyTests {
    @Test func everyDaemonKey() throws {
        let text = """
            [daemon]
            control_socket = /run/custom/ctl.sock
            metrics = 127.0.0.1:9477
            log_level = debug
            log_target = console
            poll_interval = 250ms
            shutdown_grace = 30s
            max_connections = 5000

            """ + ConfigFixture.echoListener
        let daemon = try #require(ConfigFixture.parse(text)).daemon
        #expect(daemon.controlSocket == "/run/custom/ctl.sock")
        #expect(daemon.metrics == .ipv4(address: "127.0.0.1", port: 9477))
        #expect(daemon.logLevel == .debug)
        #expect(daemon.logTarget == .console)
        #expect(daemon.pollInterval == .milliseconds(250))
        #expect(daemon.shutdownGrace == .seconds(30))
        #expect(daemon.maxConnections == 5000)
    }

    @Test func daemonDefaultsWhenSectionIsAbsent() throws {
        let configuration = try #require(ConfigFixture.parse(ConfigFixture.echoListener))
        #expect(configuration.daemon == DaemonSettings.defaults)
        #expect(configuration.daemon.controlSocket == "/run/reaperd/control.sock")
        #expect(configuration.daemon.metrics == nil)
        #expect(configuration.daemon.logLevel == .info)
        #expect(configuration.daemon.logTarget == .auto)
        #expect(configuration.daemon.pollInterval == .seconds(1))
        #expect(configuration.daemon.shutdownGrace == .seconds(10))
        #expect(configuration.daemon.maxConnections == 100_000)
        #expect(configuration.defaults == ConnectionSettings.defaults)
        #expect(configuration.source == .file("test.conf"))
    }

    @Test func connectionDefaultsMatchSpec() {
        let settings = ConnectionSettings.defaults
        #expect(settings.keepalive)
        #expect(settings.keepaliveIdle == 60)
        #expect(settings.keepaliveInterval == 10)
        #expect(settings.keepaliveCount == 3)
        #expect(settings.userTimeout == .auto)
        #expect(settings.idleTimeout == .zero)
        #expect(settings.halfCloseTimeout == .seconds(60))
        #expect(settings.connectTimeout == .seconds(5))
        #expect(settings.upstreamKeepalive)
        #expect(settings.maxConnections == 10_000)
        #expect(settings.backlog == 4096)
        #expect(!settings.reusePort)
    }

    @Test func everyConnectionKeyInDefaults() throws {
        let settings = try #require(
            ConfigFixture.connection(
                defaults: """
                    keepalive = no
                    keepalive_idle = 2min
                    keepalive_interval = 5
                    keepalive_count = 9
                    user_timeout = 45s
                    idle_timeout = 2h
                    half_close_timeout = 0
                    connect_timeout = 1500ms
                    upstream_keepalive = no
                    max_connections = 77
                    backlog = 128
                    reuse_port = yes
                    """))
        #expect(!settings.keepalive)
        #expect(settings.keepaliveIdle == 120)
        #expect(settings.keepaliveInterval == 5)
        #expect(settings.keepaliveCount == 9)
        #expect(settings.userTimeout == .after(.seconds(45)))
        #expect(settings.idleTimeout == .seconds(7200))
        #expect(settings.halfCloseTimeout == .zero)
        #expect(settings.connectTimeout == .milliseconds(1500))
        #expect(!settings.upstreamKeepalive)
        #expect(settings.maxConnections == 77)
        #expect(settings.backlog == 128)
        #expect(settings.reusePort)
    }

    @Test func everyListenerKey() throws {
        let text = """
            [listener:pg]
            listen = 0.0.0.0:6432, [::]:6432, localhost:7432
            mode = relay
            upstream = 127.0.0.1:5432

            [listener:sock]
            listen = 127.0.0.1:7000
            upstream = unix:/run/postgresql/.s.PGSQL.5432

            [listener:echo-1_x]
            mode = echo
            """
        let configuration = try #require(ConfigFixture.parse(text))
        #expect(configuration.listeners.map(\.name) == ["pg", "sock", "echo-1_x"])
        let pg = try #require(configuration.listener(named: "pg"))
        #expect(pg.line == 1)
        #expect(
            pg.listen == [
                .ipv4(address: "0.0.0.0", port: 6432), .ipv6(address: "::", port: 6432),
                .ipv4(address: "127.0.0.1", port: 7432),
            ])
        #expect(pg.mode == .relay)
        #expect(pg.upstream == .address(.ipv4(address: "127.0.0.1", port: 5432)))
        let sock = try #require(configuration.listener(named: "sock"))
        #expect(sock.line == 6)
        #expect(sock.mode == .relay, "relay is the default mode")
        #expect(sock.upstream == .address(.unix(path: "/run/postgresql/.s.PGSQL.5432")))
        let echo = try #require(configuration.listener(named: "echo-1_x"))
        #expect(echo.listen.isEmpty, "listen may be omitted for socket activation")
        #expect(echo.mode == .echo)
        #expect(echo.upstream == nil)
    }

    @Test func listenerNameMayBe64Characters() throws {
        let name = String(repeating: "n", count: 64)
        let configuration = try #require(ConfigFixture.parse("[listener:\(name)]\nmode = echo\n"))
        #expect(configuration.listeners.first?.name == name)
    }

    @Test func metricsOnIPv6AndOff() throws {
        let v6 = try #require(ConfigFixture.parse("[daemon]\nmetrics = [::1]:9477\n" + ConfigFixture.echoListener))
        #expect(v6.daemon.metrics == .ipv6(address: "::1", port: 9477))
        let off = try #require(ConfigFixture.parse("[daemon]\nmetrics = off\n" + ConfigFixture.echoListener))
        #expect(off.daemon.metrics == nil)
    }

    @Test func listenersWithPortZeroMayShareAnAddress() throws {
        let text = """
            [listener:a]
            listen = 127.0.0.1:0
            mode = echo
            [listener:b]
            listen = 127.0.0.1:0
            mode = echo
            """
        let configuration = try #require(ConfigFixture.parse(text))
        #expect(configuration.listeners.count == 2)
    }
}
