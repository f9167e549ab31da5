import Testing

@testable import ReaperCore

@Suite struct TimerQueueTests {
    @Test func popsInDeadlineOrderAndSkipsCancelled() {
        var queue = TimerQueue()
        var fired: [Int] = []
        let base = Instant(nanoseconds: 1_000_000_000)
        let deadlines = [5, 1, 4, 2, 3]
        var timers: [LoopTimer] = []
        for value in deadlines {
            let timer = LoopTimer(deadline: base.adding(.milliseconds(value)), action: {})
            timers.append(timer)
            queue.insert(timer)
        }
        timers[2].cancel()  // the one at 4 ms
        while let timer = queue.popDue(now: base.adding(.seconds(1))) {
            fired.append(Int(timer.deadline.since(base).milliseconds))
        }
        #expect(fired == [1, 2, 3, 5])
    }

    @Test func timeoutRoundsUpAndIsMinusOneWhenEmpty() {
        var queue = TimerQueue()
        let now = Instant(nanoseconds: 10_000_000_000)
        #expect(queue.millisecondsUntilNext(from: now) == -1)
        queue.insert(LoopTimer(deadline: now.adding(.microseconds(1500)), action: {}))
        #expect(queue.millisecondsUntilNext(from: now) == 2)
        #expect(queue.popDue(now: now) == nil)
        #expect(queue.millisecondsUntilNext(from: now.adding(.seconds(1))) == 0)
    }
}
