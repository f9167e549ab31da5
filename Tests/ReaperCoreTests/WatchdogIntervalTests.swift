import Testing

@testable import ReaperCore

@Suite struct WatchdogIntervalTests {
    @Test func halfOfTheTimeoutWithAFloor() {
        #expect(SystemdNotifier.pingInterval(watchdogMicroseconds: 400_000) == .milliseconds(200))
        #expect(SystemdNotifier.pingInterval(watchdogMicroseconds: 2_000) == .milliseconds(1))
        // WATCHDOG_USEC=1 halves to 0 µs: a timer due again the moment it fired.
        for tiny: UInt64 in [1, 2, 3, 1_999] {
            #expect(SystemdNotifier.pingInterval(watchdogMicroseconds: tiny) == SystemdNotifier.minimumPingInterval)
        }
        #expect(SystemdNotifier.pingInterval(watchdogMicroseconds: .max) > .seconds(1_000_000))
    }
}
