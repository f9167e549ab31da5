import ReaperCore
import Testing

@Suite("Configuration: value syntax")
struct ConfigValueTests {
    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)),
        ("2s", .seconds(2)),
        ("3min", .seconds(180)),
        ("4h", .seconds(14_400)),
        ("90", .seconds(90)),
        ("0", .zero),
        ("0ms", .zero),
        ("5 s", .seconds(5)),
        ("007s", .seconds(7)),
        ("720h", .seconds(720 * 3600)),
    ])
    func durationUnits(text: String, expected: Duration) throws {
        let settings = try #require(ConfigFixture.connection(defaults: "idle_timeout = \(text)"))
        #expect(settings.idleTimeout == expected)
    }

    @Test(arguments: [
        ("1.5s", "is not a duration"),
        ("-5s", "is not a duration"),
        ("5sec", "is not a duration"),
        ("5S", "is not a duration"),
        ("s", "is not a duration"),
        ("5m", "the unit m is ambiguous"),
        ("721h", "out of range (0 ... 720h)"),
        ("99999999999999999999h", "99999999999999999999h is out of range (0 ... 720h)"),
        ("99999999999999999999999999999999", "is out of range"),
        ("18446744073709551621ms", "18446744073709551621ms is out of range"),  // 2^64 + 5 must not wrap to 5
        ("5124095576030432h", "5124095576030432h is out of range"),  // * 3600000 wraps a 64-bit multiply
    ])
    func badDurations(text: String, messagePart: String) throws {
        let diagnostic = try #require(
            ConfigFixture.onlyDiagnostic("[defaults]\nidle_timeout = \(text)\n" + ConfigFixture.echoListener))
        #expect(diagnostic.line == 2)
        #expect(diagnostic.message.hasPrefix("idle_timeout: "))
        #expect(diagnostic.message.contains(messagePart), "\(diagnostic.message)")
    }

    @Test(arguments: [
        ("yes", true), ("true", true), ("on", true), ("1", true),
        ("no", false), ("false", false), ("off", false), ("0", false),
    ])
    func booleanSpellings(text: String, expected: Bool) throws {
        let settings = try #require(
            ConfigFixture.connection(
                defaults: "keepalive = \(text)\nupstream_keepalive = \(text)\nreuse_port = \(text)"))
        #expect(settings.keepalive == expected)
        #expect(settings.upstreamKeepalive == expected)
        #expect(settings.reusePort == expected)
    }

    @Test(arguments: ["Yes", "y", "2", "enabled", "TRUE"])
    func badBooleans(text: String) throws {
        let diagnostic = try #require(
            ConfigFixture.onlyDiagnostic("[defaults]\nreuse_port = \(text)\n" + ConfigFixture.echoListener))
        #expect(diagnostic.message == "reuse_port: \(text) is not a boolean (yes/no, true/false, on/off, 1/0)")
    }

    @Test func keepaliveTimesAreWholeSeconds() throws {
        let settings = try #require(
            ConfigFixture.connection(defaults: "keepalive_idle = 90s\nkeepalive_interval = 2000ms"))
        #expect(settings.keepaliveIdle == 90)
        #expect(settings.keepaliveInterval == 2)
        let diagnostic = try #require(
            ConfigFixture.onlyDiagnostic("[defaults]\nkeepalive_idle = 1500ms\n" + ConfigFixture.echoListener))
        #expect(diagnostic.message == "keepalive_idle: 1500ms must be whole seconds")
    }

    @Test(arguments: [
        ("keepalive_idle = 0", "keepalive_idle: 0 is out of range (1s ... 32767s)"),
        ("keepalive_idle = 32768", "keepalive_idle: 32768 is out of range (1s ... 32767s)"),
        ("keepalive_interval = 500ms", "keepalive_interval: 500ms is out of range (1s ... 32767s)"),
        ("keepalive_count = 0", "keepalive_count: 0 is out of range (1 ... 127)"),
        ("keepalive_count = 200", "keepalive_count: 200 is out of range (1 ... 127)"),
        ("keepalive_count = -1", "keepalive_count: -1 is out of range (1 ... 127)"),
        ("keepalive_count = 3x", "keepalive_count: 3x is not a whole number"),
        ("keepalive_count = 18446744073709551619", "18446744073709551619 is out of range (1 ... 127)"),
        ("keepalive_count = +3", "keepalive_count: +3 is not a whole number"),
        ("max_connections = 10000001", "max_connections: 10000001 is out of range (1 ... 10000000)"),
        ("max_connections = 99999999999999999999999", "is out of range (1 ... 10000000)"),
        ("backlog = 65536", "backlog: 65536 is out of range (1 ... 65535)"),
        ("backlog = 1_000", "backlog: 1_000 is not a whole number"),
        ("connect_timeout = 0", "connect_timeout: 0 is out of range (1ms ... 1h)"),
        ("connect_timeout = 61min", "connect_timeout: 61min is out of range (1ms ... 1h)"),
        ("half_close_timeout = 30d", "half_close_timeout: 30d is not a duration"),
        ("user_timeout = 2147483648ms", "user_timeout: 2147483648ms is out of range (auto, 0 or 1ms ... 2147483647ms)"),
        ("user_timeout = off", "user_timeout: off is not a duration"),
    ])
    func rangesAndTypes(line: String, message: String) throws {
        let diagnostic = try #require(
            ConfigFixture.onlyDiagnostic("[defaults]\n\(line)\n" + ConfigFixture.echoListener))
        #expect(diagnostic.line == 2)
        #expect(diagnostic.message.contains(message), "\(diagnostic.message)")
    }

    @Test func rangeEdgesAreAccepted() throws {
        let low = try #require(
            ConfigFixture.connection(
                defaults: """
                    keepalive_idle = 1
                    keepalive_interval = 1s
                    keepalive_count = 1
                    connect_timeout = 1ms
                    max_connections = 1
                    backlog = 1
                    user_timeout = 1ms
                    """))
        #expect(low.keepaliveIdle == 1 && low.keepaliveInterval == 1 && low.keepaliveCount == 1)
        #expect(low.connectTimeout == .milliseconds(1) && low.maxConnections == 1 && low.backlog == 1)
        #expect(low.userTimeout == .after(.milliseconds(1)))
        let high = try #require(
            ConfigFixture.connection(
                defaults: """
                    keepalive_idle = 32767
                    keepalive_interval = 32767s
                    keepalive_count = 127
                    connect_timeout = 1h
                    max_connections = 10000000
                    backlog = 65535
                    user_timeout = 2147483647ms
                    half_close_timeout = 720h
                    """))
        #expect(high.keepaliveIdle == 32767 && high.keepaliveInterval == 32767 && high.keepaliveCount == 127)
        #expect(high.connectTimeout == .seconds(3600) && high.maxConnections == 10_000_000)
        #expect(high.backlog == 65535 && high.userTimeout == .after(.milliseconds(2_147_483_647)))
        #expect(high.halfCloseTimeout == .seconds(720 * 3600))
    }

    @Test(arguments: [("auto", UserTimeout.auto), ("0", .off), ("0s", .off), ("30s", .after(.seconds(30)))])
    func userTimeoutSpellings(text: String, expected: UserTimeout) throws {
        let settings = try #require(ConfigFixture.connection(defaults: "user_timeout = \(text)"))
        #expect(settings.userTimeout == expected)
    }

    @Test(arguments: LogLevel.allCases)
    func logLevels(level: LogLevel) throws {
        let text = "[daemon]\nlog_level = \(level.rawValue)\n" + ConfigFixture.echoListener
        #expect(ConfigFixture.parse(text)?.daemon.logLevel == level)
    }

    @Test(arguments: [LogTarget.auto, .journal, .console])
    func logTargets(target: LogTarget) throws {
        let text = "[daemon]\nlog_target = \(target.rawValue)\n" + ConfigFixture.echoListener
        #expect(ConfigFixture.parse(text)?.daemon.logTarget == target)
    }

    @Test func logLevelsAreOrderedBySeverity() {
        #expect(LogLevel.debug < .info && LogLevel.info < .notice && LogLevel.notice < .warning)
        #expect(LogLevel.warning < .err)
        #expect(LogLevel.allCases.sorted(by: >) == [.err, .warning, .notice, .info, .debug])
        #expect(!(LogLevel.err < .err))
    }

    @Test(arguments: [
        ("poll_interval = 9ms", "poll_interval: 9ms is out of range (10ms ... 1h)"),
        ("poll_interval = 2h", "poll_interval: 2h is out of range (10ms ... 1h)"),
        ("shutdown_grace = 3601s", "shutdown_grace: 3601s is out of range (0 ... 1h)"),
        ("log_level = warn", "log_level: warn is not one of debug, info, notice, warning, err"),
        ("log_target = syslog", "log_target: syslog is not one of auto, journal, console"),
        ("control_socket = run/ctl.sock", "control_socket: run/ctl.sock is not an absolute path"),
        ("metrics = 127.0.0.1:0", "metrics: 127.0.0.1:0: port 0 is not allowed here"),
        ("metrics = unix:/run/m.sock", "metrics: unix:/run/m.sock: a unix socket is not allowed here"),
        ("metrics = on", "metrics: on: missing :PORT"),
        ("max_connections = 0", "max_connections: 0 is out of range (1 ... 10000000)"),
    ])
    func badDaemonValues(line: String, message: String) throws {
        let diagnostic = try #require(ConfigFixture.onlyDiagnostic("[daemon]\n\(line)\n" + ConfigFixture.echoListener))
        #expect(diagnostic.line == 2)
        #expect(diagnostic.message.hasPrefix(message), "\(diagnostic.message)")
    }

    @Test func shutdownGraceMayBeZero() throws {
        let text = "[daemon]\nshutdown_grace = 0\n" + ConfigFixture.echoListener
        #expect(ConfigFixture.parse(text)?.daemon.shutdownGrace == .zero)
    }
}
