import Testing

@testable import ReaperCore

private final class Entry: SweepQueueEntry {
    let name: Int
    var sweepDue = Instant(nanoseconds: 0)
    var sweepSlot = -1
    init(_ name: Int) { self.name = name }
}

@Suite struct SweepQueueTests {
    private let base = Instant(nanoseconds: 1_000_000_000)

    @Test func popsOnlyWhatIsDueInOrder() {
        var queue = SweepQueue<Entry>()
        let entries = (0..<6).map(Entry.init)
        for (entry, seconds) in zip(entries, [50, 10, 40, 20, 30, 60]) {
            queue.schedule(entry, at: base.adding(.seconds(Int64(seconds))))
        }
        #expect(queue.earliest == base.adding(.seconds(10)))
        var popped: [Int] = []
        while let entry = queue.popDue(now: base.adding(.seconds(35))) { popped.append(entry.name) }
        #expect(popped == [1, 3, 4])
        #expect(queue.count == 3)
        #expect(popped.allSatisfy { name in entries[name].sweepSlot == -1 })
    }

    /// A connection brought forward (bytes moved) or pushed back (its next
    /// look), and one that ends, keep the heap whole.
    @Test func movesAndRemovalsKeepTheOrder() {
        var queue = SweepQueue<Entry>()
        var generator = SystemRandomNumberGenerator()
        let entries = (0..<500).map(Entry.init)
        var due: [Int: Int64] = [:]
        for entry in entries {
            let at = Int64.random(in: 0..<10_000, using: &generator)
            due[entry.name] = at
            queue.schedule(entry, at: base.adding(.milliseconds(at)))
        }
        for entry in entries where entry.name % 3 == 0 {
            let at = Int64.random(in: 0..<10_000, using: &generator)
            due[entry.name] = at
            queue.schedule(entry, at: base.adding(.milliseconds(at)))
        }
        for entry in entries where entry.name % 5 == 0 {
            queue.remove(entry)
            queue.remove(entry)  // twice is harmless: it is not queued
            due[entry.name] = nil
            #expect(entry.sweepSlot == -1)
        }
        #expect(queue.count == due.count)
        var popped: [Int64] = []
        while let entry = queue.popDue(now: base.adding(.seconds(20))) {
            #expect(due[entry.name] != nil)
            popped.append(entry.sweepDue.since(base).milliseconds)
        }
        #expect(popped.count == due.count)
        #expect(popped == popped.sorted())
        #expect(queue.earliest == nil)
    }

    /// The sweep's worst case: every connection due every sweep, each popped
    /// and scheduled again for the same next second, while some end between
    /// sweeps. Every one comes up exactly once a round, and the slots stay true
    /// (a wrong slot trips `remove`'s precondition).
    @Test func everyEntryDueEverySweepComesUpOnceARound() {
        var queue = SweepQueue<Entry>()
        var live = (0..<2000).map(Entry.init)
        for entry in live { queue.schedule(entry, at: base) }
        for round in 1...5 {
            let now = base.adding(.seconds(Int64(round - 1)))
            var seen = Set<Int>()
            while let entry = queue.popDue(now: now) {
                #expect(seen.insert(entry.name).inserted)
                queue.schedule(entry, at: now.adding(.seconds(1)))
            }
            #expect(seen.count == live.count)
            for entry in live where entry.name % 7 == round { queue.remove(entry) }
            live.removeAll { $0.sweepSlot == -1 }
            #expect(queue.count == live.count)
        }
    }
}
