import ReaperCore
import Testing

@Suite("ConnectionSettings.userTimeoutMilliseconds")
struct UserTimeoutTests {
    @Test func autoIsIdlePlusIntervalTimesCount() {
        #expect(ConnectionSettings.defaults.userTimeoutMilliseconds == 90_000)  // (60 + 10 * 3) s
        let settings = ConnectionSettings(keepaliveIdle: 7, keepaliveInterval: 2, keepaliveCount: 4)
        #expect(settings.userTimeoutMilliseconds == 15_000)
    }

    @Test func autoFollowsParsedKeepalive() throws {
        let settings = try #require(
            ConfigFixture.connection(defaults: "keepalive_idle = 2min\nkeepalive_interval = 15\nkeepalive_count = 8"))
        #expect(settings.userTimeoutMilliseconds == 240_000)
    }

    @Test func offIsZero() {
        #expect(ConnectionSettings(userTimeout: .off).userTimeoutMilliseconds == 0)
    }

    @Test func explicitIsItsMilliseconds() {
        #expect(ConnectionSettings(userTimeout: .after(.milliseconds(2500))).userTimeoutMilliseconds == 2500)
        #expect(ConnectionSettings(userTimeout: .after(.seconds(30))).userTimeoutMilliseconds == 30_000)
    }

    @Test func explicitIgnoresKeepalive() {
        let settings = ConnectionSettings(keepaliveIdle: 1000, userTimeout: .after(.seconds(5)))
        #expect(settings.userTimeoutMilliseconds == 5000)
    }

    @Test func autoIsCappedAtTheKernelsIntLimit() {
        // (32767 + 32767 * 127) s = 4 194 176 000 ms, more than a C int holds.
        let settings = ConnectionSettings(keepaliveIdle: 32767, keepaliveInterval: 32767, keepaliveCount: 127)
        #expect(settings.userTimeoutMilliseconds == UInt32(Int32.max))
    }

    @Test func explicitNeverReadsAsOff() {
        #expect(ConnectionSettings(userTimeout: .after(.microseconds(10))).userTimeoutMilliseconds == 1)
        #expect(ConnectionSettings(userTimeout: .after(.seconds(1 << 40))).userTimeoutMilliseconds == UInt32(Int32.max))
    }
}
