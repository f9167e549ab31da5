import ReaperCore
import Testing

/// The example block of SPEC.md section 3, verbatim (trailing comments included).
let configSpecExample = """
    [daemon]
    control_socket = /run/reaperd/control.sock
    metrics = off                 # or 127.0.0.1:9477 — Prometheus text format
    log_level = info              # debug | info | notice | warning | err
    log_target = auto             # auto (journal when under systemd) | journal | console
    poll_interval = 1s            # TCP_INFO sweep period
    shutdown_grace = 10s          # on SIGTERM: stop accepting, let relays drain this long
    max_connections = 100000      # across all listeners

    [defaults]                    # every listener inherits these; a listener may override any
    keepalive = yes
    keepalive_idle = 60s          # TCP_KEEPIDLE   (1 s .. 32767 s)
    keepalive_interval = 10s      # TCP_KEEPINTVL  (1 s .. 32767 s)
    keepalive_count = 3           # TCP_KEEPCNT    (1 .. 127)
    user_timeout = auto           # TCP_USER_TIMEOUT; auto = idle + interval * count; 0 = off
    idle_timeout = 0              # application idle limit, no bytes either way; 0 = off
    half_close_timeout = 60s      # after one side's FIN, how long the other may keep sending
    connect_timeout = 5s          # upstream connect deadline
    upstream_keepalive = yes      # same keepalive settings on the upstream socket
    max_connections = 10000       # per listener
    backlog = 4096
    reuse_port = no               # SO_REUSEPORT in addition to SO_REUSEADDR
    resolve_interval = 30s        # how often an upstream given by name is re-resolved

    [listener:pg]                 # one section per listener; NAME = [A-Za-z0-9_-]+
    listen = 0.0.0.0:6432, [::]:6432
    mode = relay                  # relay | echo
    upstream = 127.0.0.1:5432     # host:port (a name or an address), [v6]:port, or unix:/path

    """

@Suite("Configuration: SPEC example, embedded default, round trip")
struct ConfigRoundTripTests {
    @Test func specExampleParses() throws {
        let configuration = try #require(ConfigFixture.parse(configSpecExample, file: "/etc/reaperd/reaperd.conf"))
        #expect(configuration.source == .file("/etc/reaperd/reaperd.conf"))
        #expect(configuration.daemon == DaemonSettings.defaults)
        #expect(configuration.defaults == ConnectionSettings.defaults)
        #expect(configuration.listeners.count == 1)
        let pg = try #require(configuration.listener(named: "pg"))
        #expect(pg.listen == [.ipv4(address: "0.0.0.0", port: 6432), .ipv6(address: "::", port: 6432)])
        #expect(pg.mode == .relay)
        #expect(pg.upstream == .address(.ipv4(address: "127.0.0.1", port: 5432)))
        #expect(pg.connection == ConnectionSettings.defaults)
        #expect(pg.line == 25)
    }

    @Test func embeddedDefaultIsSpecSection4() throws {
        let configuration = Configuration.embeddedDefault
        #expect(configuration.source == .embeddedDefault)
        #expect(configuration.daemon == DaemonSettings.defaults)
        #expect(configuration.listeners.count == 1)
        let echo = try #require(configuration.listener(named: "echo"))
        #expect(echo.listen == [.ipv4(address: "127.0.0.1", port: 7070)])
        #expect(echo.mode == .echo)
        #expect(echo.upstream == nil)
        #expect(echo.connection.keepalive)
        #expect(echo.connection.keepaliveIdle == 60)
        #expect(echo.connection.keepaliveInterval == 10)
        #expect(echo.connection.keepaliveCount == 3)
        #expect(echo.connection == ConnectionSettings.defaults)
    }

    @Test(arguments: configRoundTripFiles)
    func roundTrip(_ text: String) throws {
        let first = try #require(ConfigFixture.parse(text))
        try assertRoundTrip(first)
    }

    @Test func embeddedDefaultRoundTrips() throws {
        try assertRoundTrip(Configuration.embeddedDefault)
    }

    private func assertRoundTrip(_ configuration: Configuration) throws {
        let printed = configuration.effectiveINI()
        let reparsed = try #require(ConfigFixture.parse(printed, file: "effective.conf"))
        var expected = configuration
        expected.source = .file("effective.conf")
        #expect(reparsed == expected)
        #expect(reparsed.listeners.map(\.connection) == configuration.listeners.map(\.connection))
        #expect(reparsed.effectiveINI() == printed)
    }

    @Test func embeddedDefaultEffectiveINI() {
        let expected = """
            # reaperd effective configuration: every key, defaults filled in

            [daemon]
            control_socket = /run/reaperd/control.sock
            metrics = off
            log_level = info
            log_target = auto
            poll_interval = 1s
            shutdown_grace = 10s
            max_connections = 100000
            fd_store = auto
            fd_store_min_age = 2s
            workers = auto  # \(WorkerCount.auto.resolve()) here

            [defaults]
            keepalive = yes
            keepalive_idle = 1min
            keepalive_interval = 10s
            keepalive_count = 3
            user_timeout = auto  # 90s
            idle_timeout = 0
            half_close_timeout = 1min
            connect_timeout = 5s
            upstream_keepalive = yes
            max_connections = 10000
            backlog = 4096
            reuse_port = no
            upstream_proxy_protocol = off
            accept_proxy_protocol = no
            proxy_header_timeout = 5s
            resolve_interval = 30s

            [listener:echo]
            listen = 127.0.0.1:7070
            mode = echo
            keepalive = yes
            keepalive_idle = 1min
            keepalive_interval = 10s
            keepalive_count = 3
            user_timeout = auto  # 90s
            idle_timeout = 0
            half_close_timeout = 1min
            connect_timeout = 5s
            upstream_keepalive = yes
            max_connections = 10000
            backlog = 4096
            reuse_port = no
            accept_proxy_protocol = no
            proxy_header_timeout = 5s
            resolve_interval = 30s

            """
        #expect(Configuration.embeddedDefault.effectiveINI() == expected)
    }

    @Test func effectiveINIPrintsCanonicalValues() throws {
        let text = """
            [daemon]
            metrics = localhost:9477
            poll_interval = 1500ms
            shutdown_grace = 120s
            [defaults]
            idle_timeout = 7200s
            half_close_timeout = 90
            connect_timeout = 60000ms
            user_timeout = 0
            [listener:pg]
            listen = 0.0.0.0:6432, [0::0]:6432
            upstream = unix:/run/pg.sock
            user_timeout = 2500ms
            keepalive_idle = 3600
            [listener:sa]
            mode = echo
            """
        let printed = try #require(ConfigFixture.parse(text)).effectiveINI()
        let lines = printed.split(separator: "\n").map(String.init)
        for line in [
            "metrics = 127.0.0.1:9477", "poll_interval = 1500ms", "shutdown_grace = 2min",
            "idle_timeout = 2h", "half_close_timeout = 90s", "connect_timeout = 1min", "user_timeout = 0",
            "listen = 0.0.0.0:6432, [::]:6432", "upstream = unix:/run/pg.sock", "user_timeout = 2500ms",
            "keepalive_idle = 1h",
        ] {
            #expect(lines.contains(line), "missing \(line)")
        }
        let sections = printed.split(separator: "\n\n").map(String.init)
        #expect(sections.count == 5)
        let socketActivated = try #require(sections.last)
        #expect(socketActivated.hasPrefix("[listener:sa]\nmode = echo\nkeepalive = yes\n"), "no listen line when empty")
        #expect(!socketActivated.contains("upstream ="))
        for section in sections.dropFirst(2) {
            let keys = section.split(separator: "\n").compactMap { $0.split(separator: " = ").first.map(String.init) }
            for key in [
                "keepalive", "keepalive_idle", "keepalive_interval", "keepalive_count", "user_timeout",
                "idle_timeout", "half_close_timeout", "connect_timeout", "upstream_keepalive",
                "max_connections", "backlog", "reuse_port",
            ] {
                #expect(keys.contains(key), "listener section lacks \(key)")
            }
        }
    }
}

let configRoundTripFiles: [String] = [
    configSpecExample,
    """
    [listener:a]
    listen = 0.0.0.0:7100
    mode = echo
    reuse_port = yes
    [listener:b]
    listen = 127.0.0.1:7100
    mode = echo
    reuse_port = yes
    """,
    """
    [defaults]
    keepalive_idle = 5s
    idle_timeout = 1h
    connect_timeout = 2s
    [service:redis]
    unit = redis-server.service
    ports = 6379, 6380
    user_timeout = 7s
    [service:pg]
    cgroup = /system.slice/postgresql@15-main.service
    keepalive = no
    """,
    """
    [defaults]
    keepalive = off
    keepalive_idle = 2min
    keepalive_interval = 7
    keepalive_count = 127
    user_timeout = 0
    idle_timeout = 720h
    half_close_timeout = 0
    connect_timeout = 1ms
    upstream_keepalive = false
    max_connections = 10000000
    backlog = 1
    reuse_port = on
    [daemon]
    control_socket = /tmp/r.sock
    metrics = [::1]:9477
    log_level = err
    log_target = journal
    poll_interval = 10ms
    shutdown_grace = 0
    max_connections = 1
    [listener:a]
    listen = 127.0.0.1:0, [::1]:0
    mode = echo
    keepalive = yes
    user_timeout = 90s
    """,
    """
    [listener:one]
    listen = 10.0.0.1:443
    upstream = [fd00::5]:8443
    idle_timeout = 61min
    [listener:two]
    upstream = unix:/run/two.sock
    keepalive_idle = 32767
    keepalive_interval = 3600
    user_timeout = 2147483647ms
    """,
]

@Suite("Configuration: adopt mode sections")
struct ServiceSectionTests {
    /// A service inherits what means something beside a service and nothing else.
    @Test func servicesInheritTheAdoptableDefaults() throws {
        let configuration = try #require(
            ConfigFixture.parse(
                """
                [defaults]
                keepalive_idle = 5s
                connect_timeout = 2s
                [service:redis]
                unit = redis-server.service
                ports = 6379
                user_timeout = 7s
                """))
        #expect(configuration.listeners.isEmpty)
        let redis = try #require(configuration.services.first)
        #expect(redis.target == .unit("redis-server.service"))
        #expect(redis.ports == [6379])
        #expect(redis.connection.keepaliveIdle == 5)
        #expect(redis.connection.userTimeoutMilliseconds == 7000)
        #expect(configuration.effectiveINI().contains("[service:redis]\nunit = redis-server.service\nports = 6379\n"))
        #expect(!configuration.effectiveINI().split(separator: "[service:redis]")[1].contains("connect_timeout"))
    }
}

@Suite("Configuration: advice, never refusals")
struct ConfigAdviceTests {
    @Test func aShortAutomaticUserTimeoutIsPointedOut() throws {
        let short = try #require(
            ConfigFixture.parse(
                "[defaults]\nkeepalive_idle = 1s\nkeepalive_interval = 1s\nkeepalive_count = 2\n"
                    + "[listener:t]\nlisten = 127.0.0.1:0\nmode = echo\n", file: "/etc/reaperd/reaperd.conf"))
        let advice = short.advice()
        #expect(advice.count == 1)
        #expect(
            advice.first?.hasPrefix("/etc/reaperd/reaperd.conf:5: warning: listener t: user_timeout = auto comes to 3s")
                == true)
        #expect(short.effectiveINI().contains("user_timeout = auto  # 3s\n"))
        let defaults = try #require(ConfigFixture.parse("[listener:t]\nlisten = 127.0.0.1:0\nmode = echo\n"))
        #expect(defaults.advice().isEmpty)
        let explicit = try #require(
            ConfigFixture.parse(
                "[defaults]\nkeepalive_idle = 1s\nuser_timeout = 3s\n[listener:t]\nlisten = 127.0.0.1:0\nmode = echo\n")
        )
        #expect(explicit.advice().isEmpty, "an explicit value is the operator's choice")
    }
}
