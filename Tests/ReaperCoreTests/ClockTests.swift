import Testing

@testable import ReaperCore

@Suite struct ClockTests {
    /// Swift splits a duration into components that share its sign: -1 ms is
    /// (seconds: 0, attoseconds: -10^15), so a check of the seconds alone misses it.
    @Test(arguments: [
        Duration.nanoseconds(-1), .milliseconds(-1), .milliseconds(-500), .milliseconds(-1500), .seconds(-1),
        .seconds(Int64.min), .seconds(Int64.min) + .milliseconds(1),
        Duration(secondsComponent: 0, attosecondsComponent: -1),
    ])
    func negativeDurationsSaturateToZero(_ duration: Duration) {
        #expect(duration.nanoseconds == 0)
        #expect(duration.milliseconds == 0)
        let start = Instant(nanoseconds: 5_000_000_000)
        #expect(start.adding(duration) == start)
    }

    @Test func boundaries() {
        #expect(Duration.zero.nanoseconds == 0)
        #expect(Duration.nanoseconds(1).nanoseconds == 1)
        #expect(Duration(secondsComponent: 0, attosecondsComponent: 999_999_999).nanoseconds == 0)
        #expect(Duration.milliseconds(1500).nanoseconds == 1_500_000_000)
        #expect(Duration.milliseconds(1500).milliseconds == 1500)
        // The largest whole second that fits, plus a fraction that does not.
        let seconds = Int64(UInt64.max / 1_000_000_000)
        #expect(Duration.seconds(seconds).nanoseconds == UInt64(seconds) * 1_000_000_000)
        #expect((Duration.seconds(seconds) + .milliseconds(999)).nanoseconds == .max)
        #expect(Duration.seconds(seconds + 1).nanoseconds == .max)
        #expect(Duration.seconds(Int64.max).nanoseconds == .max)
        #expect(Duration.seconds(Int64.max).milliseconds == Int64(UInt64.max / 1_000_000))
    }
}
