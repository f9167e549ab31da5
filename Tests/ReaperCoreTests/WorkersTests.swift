import Testing

@testable import ReaperCore

/// The pieces workers share, driven from several threads at once (TSan runs these).
@Suite struct WorkersTests {
    /// Two threads taking places at once never get more than the limit.
    @Test func openCountNeverExceedsItsLimitAcrossThreads() throws {
        let count = OpenCount()
        let taken = Lock(0)
        let done = try EventCounter(blocking: true)
        for index in 0..<2 {
            try Threads.startDetached(name: "take-\(index)") {
                var mine = 0
                for _ in 0..<20_000 where count.take(limit: 1_000) { mine += 1 }
                taken.withLock { $0 += mine }
                done.signal()
            }
        }
        var signals: UInt64 = 0
        while signals < 2 { signals += done.wait() }
        #expect(taken.withLock { $0 } == 1_000)
        #expect(count.current == 1_000)
        count.give()
        #expect(count.take(limit: 1_000))
        #expect(!count.take(limit: 1_000))
    }

    /// Jobs posted from another thread run on the loop's thread, in order;
    /// a question is answered, and one the loop never gets to times out.
    @Test func mailboxRunsPostedJobsInOrderAndAnswersQuestions() throws {
        let loop = try EventLoop()
        let mailbox = try LoopMailbox(loop: loop)
        nonisolated(unsafe) var seen: [Int] = []
        // Not running yet: the question waits out its deadline.
        #expect(mailbox.ask(within: .milliseconds(50)) { 1 } == nil)
        let box = UncheckedBox(loop)
        let stopped = try EventCounter(blocking: true)
        try Threads.startDetached(name: "loop") {
            try? box.value.run()
            stopped.signal()
        }
        for index in 0..<100 { mailbox.post { seen.append(index) } }
        #expect(mailbox.ask { seen.count } == 100)
        #expect(mailbox.ask { seen } == Array(0..<100))
        mailbox.post {
            mailbox.close()
            box.value.stop()
        }
        stopped.wait()
    }

    @Test func exhaustionIsReportedOncePerIntervalWithTheCountSince() {
        let shared = ProcessWide()
        let start = Instant(nanoseconds: 5_000_000_000)
        #expect(shared.exhaustionToReport(now: start, every: .seconds(10)) == 1)
        #expect(shared.exhaustionToReport(now: start.adding(.seconds(1)), every: .seconds(10)) == nil)
        #expect(shared.exhaustionToReport(now: start.adding(.seconds(2)), every: .seconds(10)) == nil)
        #expect(shared.exhaustionToReport(now: start.adding(.seconds(11)), every: .seconds(10)) == 3)
    }

    @Test func cpuQuotaRoundsUpAndMaxIsNoQuota() {
        #expect(UsableCPUs.parseQuota("max 100000\n") == nil)
        #expect(UsableCPUs.parseQuota("150000 100000\n") == 2)
        #expect(UsableCPUs.parseQuota("100000 100000") == 1)
        #expect(UsableCPUs.parseQuota("50000 100000") == 1)
        #expect(UsableCPUs.parseQuota("garbage") == nil)
        #expect(UsableCPUs.count() >= 1)
        #expect(WorkerCount.count(3).resolve() == 3)
    }

    @Test func reportsAddUp() {
        var a = WorkersReport()
        var entry = ListenerReport()
        entry.counters.accepted = 3
        entry.counters.reaped[.keepalive] = 1
        entry.health[.idle] = 2
        a.listeners["pg"] = entry
        a.sweep.record(seconds: 0.002, sockets: 4, looked: 4)
        a.reaps = 1
        var b = a
        b.sweep.record(seconds: 0.5, sockets: 1, looked: 1)
        a.add(b)
        #expect(a.listeners["pg"]?.counters.accepted == 6)
        #expect(a.listeners["pg"]?.counters.reaped[.keepalive] == 2)
        #expect(a.listeners["pg"]?.health[.idle] == 4)
        #expect(a.sweep.count == 3)
        #expect(a.sweep.looks == 9)
        #expect(a.sweep.lastSeconds == 0.5)
        #expect(a.reaps == 2)
    }
}

/// Hands a non-Sendable value to a thread the test controls.
private final class UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
