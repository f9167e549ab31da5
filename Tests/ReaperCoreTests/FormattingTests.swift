import Testing

@testable import ReaperCore

@Suite struct FormattingTests {
    @Test func jsonEscapesAndNests() {
        var json = JSONWriter()
        json.beginObject()
        json.field("s", "a\"b\\c\n\u{01}")
        json.field("n", 3)
        json.field("b", true)
        json.beginArray("list")
        json.beginObject()
        json.field("x", 1)
        json.endObject()
        json.endArray()
        json.endObject()
        #expect(json.text == #"{"s":"a\"b\\c\n\u0001","n":3,"b":true,"list":[{"x":1}]}"#)
    }

    @Test func consoleLineShowsFieldsReadably() {
        let record = LogRecord(
            level: .notice, message: "connection reaped",
            fields: [("REAPERD_REASON", "keepalive"), ("REAPERD_PEER", "1.2.3.4:5"), ("REAPERD_NOTE", "two words")],
            event: .reap, file: "x", line: 1)
        #expect(
            ConsoleSink.format(record)
                == "notice: connection reaped reason=keepalive peer=1.2.3.4:5 note=\"two words\"\n")
        #expect(record.priority == 5)
    }

    @Test func socketAddressesPrintAsConfigured() throws {
        #expect(try #require(SocketAddress(ip: "127.0.0.1", port: 80)).description == "127.0.0.1:80")
        #expect(try #require(SocketAddress(ip: "::1", port: 443)).description == "[::1]:443")
        #expect(try #require(SocketAddress(unixPath: "/run/x.sock")).description == "unix:/run/x.sock")
        #expect(SocketAddress(ip: "not-an-ip", port: 1) == nil)
        #expect(SocketAddress(unixPath: String(repeating: "a", count: 200)) == nil)
    }

    @Test func prometheusLabelEscaping() {
        var page = PrometheusText()
        page.family("m", "gauge", "help")
        page.sample("m", [("l", "a\"b\\\n")], 2)
        page.sample("m", [], 0.25)
        #expect(page.text == "# HELP m help\n# TYPE m gauge\nm{l=\"a\\\"b\\\\\\n\"} 2\nm 0.25\n")
    }

    @Test func daemonCommandLine() throws {
        #expect(try DaemonCommandLine.parse([]) == DaemonCommandLine())
        let check = try DaemonCommandLine.parse(["--check-config", "--config", "/x.conf"])
        #expect(check.action == .checkConfig && check.configPath == "/x.conf")
        #expect(throws: DaemonCommandLine.UsageError.self) { try DaemonCommandLine.parse(["--bogus"]) }
        #expect(throws: DaemonCommandLine.UsageError.self) { try DaemonCommandLine.parse(["--config"]) }
    }
}
