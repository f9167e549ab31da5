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

@Suite struct TimerQueueCompactionTests {
    @Test func cancelledTimersDoNotPileUp() {
        var queue = TimerQueue()
        let base = Instant(nanoseconds: 1_000_000_000)
        var live: [LoopTimer] = []
        for index in 0..<10_000 {
            let timer = LoopTimer(deadline: base.adding(.milliseconds(Int64(index % 997))), action: {})
            queue.insert(timer)
            if index % 100 == 0 { live.append(timer) } else { timer.cancel() }
        }
        #expect(queue.count < 3_000)
        var fired: [Instant] = []
        while let timer = queue.popDue(now: base.adding(.seconds(10))) { fired.append(timer.deadline) }
        #expect(fired.count == live.count)
        #expect(fired == fired.sorted())
    }
}
