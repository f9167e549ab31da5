import ReaperCore
import Testing

/// One malformed file and the single diagnostic it must produce.
struct MalformedFile: Sendable, CustomTestStringConvertible {
    var name: String
    var text: String
    var line: Int?
    var messagePart: String

    var testDescription: String { name }
}

private let echo = ConfigFixture.echoListener

let configMalformedFiles: [MalformedFile] = [
    MalformedFile(
        name: "key outside a section", text: "keepalive = yes\n" + echo, line: 1,
        messagePart: "keepalive is outside any section"),
    MalformedFile(
        name: "line without =", text: "[defaults]\nkeepalive yes\n" + echo, line: 2,
        messagePart: "expected [section] or key = value, found keepalive yes"),
    MalformedFile(
        name: "missing key", text: "[defaults]\n = yes\n" + echo, line: 2,
        messagePart: "missing key before ="),
    MalformedFile(
        name: "empty value", text: "[defaults]\nkeepalive =\n" + echo, line: 2,
        messagePart: "keepalive: missing value"),
    MalformedFile(
        name: "value only a comment", text: "[defaults]\nbacklog = # none\n" + echo, line: 2,
        messagePart: "backlog: missing value"),
    MalformedFile(
        name: "unclosed header", text: "[daemon\nlog_level = info\n" + echo, line: 1,
        messagePart: "missing its closing ]"),
    MalformedFile(
        name: "text after header", text: "[daemon] x\n" + echo, line: 1,
        messagePart: "unexpected text after ]"),
    MalformedFile(
        name: "empty section name", text: "[ ]\n" + echo, line: 1,
        messagePart: "empty section name"),
    MalformedFile(
        name: "unknown section", text: echo + "[deamon]\nlog_level = info\n", line: 4,
        messagePart:
            "unknown section [deamon]; expected [daemon], [defaults], [listener:NAME] or [service:NAME]; did you mean [daemon]?"
    ),
    MalformedFile(
        name: "misspelt listener section", text: echo + "[listner:pg]\n", line: 4,
        messagePart: "did you mean [listener:pg]?"),
    MalformedFile(
        name: "section names are case-sensitive", text: "[Daemon]\n" + echo, line: 1,
        messagePart: "unknown section [Daemon]"),
    MalformedFile(
        name: "listener without name", text: "[listener]\nmode = echo\n" + echo, line: 1,
        messagePart: "[listener] needs a name"),
    MalformedFile(
        name: "listener name with a space", text: "[listener:my pg]\nmode = echo\n" + echo, line: 1,
        messagePart: "invalid listener name \"my pg\""),
    MalformedFile(
        name: "listener name too long",
        text: "[listener:\(String(repeating: "x", count: 65))]\nmode = echo\n" + echo, line: 1,
        messagePart: "use 1 to 64 characters"),
    MalformedFile(
        name: "duplicate section", text: "[daemon]\n[defaults]\n[daemon]\n" + echo, line: 3,
        messagePart: "duplicate section [daemon] (first at line 1)"),
    MalformedFile(
        name: "duplicate listener", text: echo + "[listener:t]\nmode = echo\n", line: 4,
        messagePart: "duplicate section [listener:t] (first at line 1)"),
    MalformedFile(
        name: "duplicate key", text: "[defaults]\nbacklog = 1\n\nbacklog = 2\n" + echo, line: 4,
        messagePart: "duplicate key backlog (first set at line 2)"),
    MalformedFile(
        name: "unknown key with suggestion", text: "[defaults]\nkeepalive_intervall = 5s\n" + echo,
        line: 2, messagePart: "unknown key keepalive_intervall in [defaults]; did you mean keepalive_interval?"),
    MalformedFile(
        name: "keys are case-sensitive", text: "[daemon]\nLog_Level = info\n" + echo, line: 2,
        messagePart: "unknown key Log_Level in [daemon]; did you mean log_level?"),
    MalformedFile(
        name: "unknown key without suggestion", text: "[daemon]\nfrobnicate = 1\n" + echo, line: 2,
        messagePart: "unknown key frobnicate in [daemon]"),
    MalformedFile(
        name: "listen in defaults", text: "[defaults]\nlisten = 127.0.0.1:1\n" + echo, line: 2,
        messagePart: "listen is not allowed in [defaults]; set it in a [listener:NAME] section"),
    MalformedFile(
        name: "connection key in daemon", text: "[daemon]\nkeepalive_idle = 5\n" + echo, line: 2,
        messagePart: "keepalive_idle is not allowed in [daemon]; it belongs in [defaults]"),
    MalformedFile(
        name: "daemon key in listener", text: echo + "log_level = debug\n", line: 4,
        messagePart: "log_level is not allowed in [listener:t]; it belongs in [daemon]"),
    MalformedFile(
        name: "no listener", text: "[daemon]\nlog_level = info\n", line: nil,
        messagePart: "no [listener:NAME] or [service:NAME] section; at least one listener or service is required"),
    MalformedFile(
        name: "service without a target", text: "[service:redis]\nports = 6379\n", line: 1,
        messagePart: "service redis: needs unit = NAME.service or cgroup = /PATH"),
    MalformedFile(
        name: "service with both targets", text: "[service:r]\nunit = r.service\ncgroup = /r\n", line: 3,
        messagePart: "cgroup: give unit = or cgroup =, not both (the other is at line 2)"),
    MalformedFile(
        name: "service unit not a unit", text: "[service:r]\nunit = redis\n", line: 2,
        messagePart: "unit: redis is not a unit name; expected NAME.service or NAME.scope"),
    MalformedFile(
        name: "service cgroup relative", text: "[service:r]\ncgroup = system.slice/r.service\n", line: 2,
        messagePart: "cgroup: system.slice/r.service is not a cgroup path"),
    MalformedFile(
        name: "service cgroup escapes", text: "[service:r]\ncgroup = /a/../../b\n", line: 2,
        messagePart: "is not a cgroup path"),
    MalformedFile(
        name: "service relay key", text: "[service:r]\nunit = r.service\nbacklog = 5\n", line: 3,
        messagePart: "backlog is not allowed in [service:r]: it shapes a relay"),
    MalformedFile(
        name: "service listener key", text: "[service:r]\nunit = r.service\nupstream = 127.0.0.1:1\n", line: 3,
        messagePart: "upstream is not allowed in [service:r]: it shapes a relay"),
    MalformedFile(
        name: "service bad port", text: "[service:r]\nunit = r.service\nports = 6379, 0\n", line: 3,
        messagePart: "ports: 0 is not a port (1 to 65535)"),
    MalformedFile(
        name: "service port twice", text: "[service:r]\nunit = r.service\nports = 1, 1\n", line: 3,
        messagePart: "ports: port 1 is listed twice"),
    MalformedFile(
        name: "service name taken by a listener",
        text: "[listener:pg]\nmode = echo\nlisten = 127.0.0.1:0\n[service:pg]\nunit = pg.service\n", line: 4,
        messagePart: "[service:pg]: the name is taken by [listener:pg] (line 1)"),
    MalformedFile(
        name: "service key in a listener", text: echo + "ports = 1\n", line: 4,
        messagePart: "ports is not allowed in [listener:t]; set it in a [service:NAME] section"),
    MalformedFile(
        name: "misspelt service section", text: "[servce:r]\nunit = r.service\n" + echo, line: 1,
        messagePart: "did you mean [service:r]?"),
    MalformedFile(
        name: "relay to itself",
        text: "[listener:r]\nlisten = 127.0.0.1:7000\nmode = relay\nupstream = 127.0.0.1:7000\n", line: 1,
        messagePart: "upstream = 127.0.0.1:7000 is this listener's own address"),
    MalformedFile(
        name: "relay to itself through a wildcard",
        text: "[listener:r]\nlisten = 0.0.0.0:7000\nmode = relay\nupstream = 127.0.0.5:7000\n", line: 1,
        messagePart: "is this listener's own address (listen = 0.0.0.0:7000)"),
    MalformedFile(
        name: "wildcard beside a specific address",
        text: "[listener:a]\nlisten = 0.0.0.0:7000\nmode = echo\n[listener:b]\nlisten = 127.0.0.1:7000\nmode = echo\n",
        line: 4, messagePart: "listen = 127.0.0.1:7000 overlaps 0.0.0.0:7000 of listener a (line 1)"),
    MalformedFile(
        name: "relay without upstream", text: "# pg\n\n[listener:pg]\nlisten = 127.0.0.1:6432\n",
        line: 3, messagePart: "listener pg: mode = relay needs upstream"),
    MalformedFile(
        name: "echo with upstream", text: "[listener:e]\nmode = echo\nupstream = 127.0.0.1:1\n", line: 3,
        messagePart: "upstream: not allowed with mode = echo"),
    MalformedFile(
        name: "unknown mode", text: "[listener:m]\nmode = proxy\n", line: 2,
        messagePart: "mode: proxy is not one of relay, echo"),
    MalformedFile(
        name: "upstream port 0", text: "[listener:r]\nupstream = 127.0.0.1:0\n", line: 2,
        messagePart: "upstream: 127.0.0.1:0: port 0 is not allowed here"),
    MalformedFile(
        name: "upstream host name with an underscore", text: "[listener:r]\nupstream = db_1.internal:5432\n",
        line: 2,
        messagePart: "upstream: db_1.internal:5432: db_1.internal is not a host name or a numeric address"),
    MalformedFile(
        name: "upstream host name with an empty label", text: "[listener:r]\nupstream = db..internal:5432\n",
        line: 2, messagePart: "upstream: db..internal:5432: db..internal has an empty label"),
    MalformedFile(
        name: "upstream host name label with a hyphen at its end",
        text: "[listener:r]\nupstream = db-.internal:5432\n", line: 2,
        messagePart: "a label may not start or end with a hyphen"),
    MalformedFile(
        name: "upstream host name too long",
        text: "[listener:r]\nupstream = "
            + Array(repeating: String(repeating: "a", count: 63), count: 4)
            .joined(separator: ".") + ":1\n", line: 2,
        messagePart: "the host name is longer than 253 characters"),
    MalformedFile(
        name: "upstream host name port 0", text: "[listener:r]\nupstream = db.internal:0\n", line: 2,
        messagePart: "upstream: db.internal:0: port 0 is not allowed here"),
    MalformedFile(
        name: "upstream host name without port", text: "[listener:r]\nupstream = db.internal\n", line: 2,
        messagePart: "upstream: db.internal: missing :PORT"),
    MalformedFile(
        name: "upstream bad IPv4 is not a name", text: "[listener:r]\nupstream = 10.0.0.300:5432\n", line: 2,
        messagePart: "10.0.0.300 is not a valid IPv4 address"),
    MalformedFile(
        name: "listen on a host name", text: "[listener:r]\nmode = echo\nlisten = db.internal:80\n", line: 3,
        messagePart: "listen: db.internal:80: db.internal is not a numeric IPv4 address (only upstream = takes"),
    MalformedFile(
        name: "metrics on a host name", text: "[daemon]\nmetrics = metrics.internal:9477\n" + echo, line: 2,
        messagePart: "metrics: metrics.internal:9477: metrics.internal is not a numeric IPv4 address"),
    MalformedFile(
        name: "resolve_interval below a second", text: "[defaults]\nresolve_interval = 500ms\n" + echo, line: 2,
        messagePart: "resolve_interval: 500ms is out of range (1s ... 24h)"),
    MalformedFile(
        name: "resolve_interval over a day", text: echo + "resolve_interval = 25h\n", line: 4,
        messagePart: "resolve_interval: 25h is out of range (1s ... 24h)"),
    MalformedFile(
        name: "resolve_interval not a duration", text: echo + "resolve_interval = often\n", line: 4,
        messagePart: "resolve_interval: often is not a duration"),
    MalformedFile(
        name: "resolve_interval in a service", text: "[service:r]\nunit = r.service\nresolve_interval = 5s\n",
        line: 3, messagePart: "resolve_interval is not allowed in [service:r]: it shapes a relay"),
    MalformedFile(
        name: "listen on unix socket", text: "[listener:r]\nmode = echo\nlisten = unix:/run/a.sock\n",
        line: 3, messagePart: "listen: unix:/run/a.sock: listening on a unix socket is not supported"),
    MalformedFile(
        name: "listen with empty entry", text: "[listener:r]\nmode = echo\nlisten = 127.0.0.1:1,\n",
        line: 3, messagePart: "listen: empty address in the list"),
    MalformedFile(
        name: "listen address twice in one listener",
        text: "[listener:r]\nmode = echo\nlisten = 127.0.0.1:1, localhost:1\n", line: 3,
        messagePart: "listen: 127.0.0.1:1 is listed twice"),
    MalformedFile(
        name: "listen address in two listeners",
        text: "[listener:a]\nmode = echo\nlisten = [::]:80\n[listener:b]\nmode = echo\nlisten = [0::0]:80\n",
        line: 6, messagePart: "listen: [::]:80 is already used by listener a (line 3)"),
    MalformedFile(
        name: "listen v6 without brackets", text: "[listener:r]\nmode = echo\nlisten = ::1:80\n", line: 3,
        messagePart: "write IPv6 addresses in brackets"),
    MalformedFile(
        name: "huge duration", text: "[defaults]\nidle_timeout = 99999999999999999999h\n" + echo, line: 2,
        messagePart: "idle_timeout: 99999999999999999999h is out of range (0 ... 720h)"),
    MalformedFile(
        name: "keepalive_count out of range", text: echo + "keepalive_count = 200\n", line: 4,
        messagePart: "keepalive_count: 200 is out of range (1 ... 127)"),
    MalformedFile(
        name: "fractional seconds for keepalive", text: "[defaults]\nkeepalive_interval = 1500ms\n" + echo,
        line: 2, messagePart: "keepalive_interval: 1500ms must be whole seconds"),
    MalformedFile(
        name: "NUL byte", text: "[daemon]\nlog_level = in\u{0}fo\n" + echo, line: 2,
        messagePart: "line contains a NUL byte"),
    MalformedFile(
        name: "replacement character", text: "[daemon]\n# caf\u{FFFD}\n" + echo, line: 2,
        messagePart: "line contains U+FFFD"),
    MalformedFile(
        name: "trailing comment needs whitespace", text: "[daemon]\nlog_level = info# note\n" + echo,
        line: 2, messagePart: "log_level: info# note is not one of"),
    MalformedFile(
        name: "error after CRLF lines", text: "[daemon]\r\nlog_level = info\r\nlog_target = tty\r\n" + echo,
        line: 3, messagePart: "log_target: tty is not one of auto, journal, console"),
]

@Suite("Configuration: malformed files")
struct ConfigErrorTests {
    @Test func enoughDistinctCases() {
        #expect(configMalformedFiles.count >= 30)
        #expect(Set(configMalformedFiles.map(\.name)).count == configMalformedFiles.count)
        #expect(Set(configMalformedFiles.map(\.text)).count == configMalformedFiles.count)
    }

    @Test(arguments: configMalformedFiles)
    func reportsLineAndMessage(_ file: MalformedFile) throws {
        let diagnostic = try #require(ConfigFixture.onlyDiagnostic(file.text))
        #expect(diagnostic.file == "bad.conf")
        #expect(diagnostic.line == file.line)
        #expect(diagnostic.message.contains(file.messagePart), "\(diagnostic.message)")
    }

    @Test func everyErrorIsReportedInOnePassSortedByLine() {
        let text = """
            [defaults]
            keepalive_count = 200
            keepalive_idle = soon
            [listener:pg]
            listen = 127.0.0.1:6432, example.org:1
            mode = relay
            backlog = 0
            [daemon]
            log_level = loud
            poll_interval = 1ms
            stray line
            [listener:pg]
            bogus = 1
            """
        let found = ConfigFixture.diagnostics(text)
        #expect(found.map(\.line) == [2, 3, 4, 5, 7, 9, 10, 11, 12, 13])
        let expected = [
            "keepalive_count: 200 is out of range",
            "keepalive_idle: soon is not a duration",
            "listener pg: mode = relay needs upstream",
            "listen: example.org:1: example.org is not a numeric IPv4 address",
            "backlog: 0 is out of range (1 ... 65535)",
            "log_level: loud is not one of",
            "poll_interval: 1ms is out of range (10ms ... 1h)",
            "expected [section] or key = value, found stray line",
            "duplicate section [listener:pg] (first at line 4)",
            "unknown key bogus in [listener:pg]",
        ]
        for (diagnostic, part) in zip(found, expected) {
            #expect(diagnostic.message.contains(part), "\(diagnostic.message)")
        }
        #expect(found.count == expected.count)
    }

    @Test func diagnosticsPrintAsFileLineMessage() throws {
        let found = ConfigFixture.diagnostics("[daemon]\nlog_level = x\n", file: "/etc/reaperd/reaperd.conf")
        #expect(
            found.map(\.description) == [
                "/etc/reaperd/reaperd.conf:2: log_level: x is not one of debug, info, notice, warning, err",
                "/etc/reaperd/reaperd.conf: no [listener:NAME] or [service:NAME] section; at least one listener or service is required",
            ])
        let error = ConfigError(diagnostics: found)
        #expect(error.description == found.map(\.description).joined(separator: "\n"))
    }

    @Test func invalidUTF8BytesAreReportedAtTheirLine() {
        var bytes = Array("[daemon]\nlog_level = info\n# caf".utf8)
        bytes += [0xC3, 0x28, 0x0A]  // an invalid two-byte sequence
        bytes += Array(ConfigFixture.echoListener.utf8)
        do {
            _ = try Configuration.parse(utf8: bytes, file: "raw.conf")
            Issue.record("invalid UTF-8 was accepted")
        } catch {
            #expect(error.diagnostics.map(\.description) == ["raw.conf:3: line is not valid UTF-8"])
        }
    }

    @Test func decodedInvalidUTF8IsReportedNotReplacedSilently() {
        let bytes = Array("[daemon]\nlog_level = info".utf8) + [0xFF, 0x0A] + Array(ConfigFixture.echoListener.utf8)
        let decoded = String(decoding: bytes, as: UTF8.self)
        let found = ConfigFixture.diagnostics(decoded)
        #expect(found.map(\.line) == [2])
    }

    @Test func keysOfAnUnknownSectionAreNotReportedAgain() {
        let found = ConfigFixture.diagnostics(
            "[daemons]\nlog_level = nonsense\nwhatever = 1\n" + ConfigFixture.echoListener)
        #expect(found.map(\.line) == [1])
    }

    @Test func valuesInADuplicateSectionAreStillChecked() {
        let found = ConfigFixture.diagnostics("[defaults]\n[defaults]\nbacklog = none\n" + ConfigFixture.echoListener)
        #expect(found.map(\.line) == [2, 3])
        #expect(found.last?.message.contains("backlog: none is not a whole number") == true)
    }
}
