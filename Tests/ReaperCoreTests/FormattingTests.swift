import Glibc
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

    /// Whatever the machine's time zone, the stamp names the same instant: its
    /// fields minus its offset give back the epoch second, and milliseconds are
    /// truncated, never rounded into the next second.
    @Test func consoleTimestampIsTheInstantInLocalTime() throws {
        for (seconds, nanos) in [(0, 0), (1_764_676_801, 999_999_999), (1_780_000_000, 5_000_000)] {
            let text = ConsoleSink.timestamp(timespec(tv_sec: seconds, tv_nsec: nanos))
            #expect(text.utf8.count == 29, "\(text)")
            let digits = text.split(whereSeparator: { "-T:.+".contains($0) }).map { Int($0) }
            let fields = try #require(digits.count == 9 ? digits.compactMap { $0 } : nil)
            var parts = tm()
            parts.tm_year = Int32(fields[0] - 1900)
            parts.tm_mon = Int32(fields[1] - 1)
            parts.tm_mday = Int32(fields[2])
            parts.tm_hour = Int32(fields[3])
            parts.tm_min = Int32(fields[4])
            parts.tm_sec = Int32(fields[5])
            let sign = text.dropFirst(23).first == "-" ? -1 : 1
            let offset = sign * (fields[7] * 3600 + fields[8] * 60)
            #expect(timegm(&parts) - offset == seconds, "\(text)")
            #expect(fields[6] == nanos / 1_000_000, "\(text)")
        }
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
