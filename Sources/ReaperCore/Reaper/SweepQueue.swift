/// What `SweepQueue` holds: an object that keeps its own due time and its
/// position in the queue (a `Connection`; a bare object in tests).
protocol SweepQueueEntry: AnyObject {
    var sweepDue: Instant { get set }
    /// Its index in the queue's heap, -1 when not queued. Only the queue writes it.
    var sweepSlot: Int { get set }
}

/// The connections the sweep will look at, by when: a binary min-heap on
/// `sweepDue` whose entries know their own position (`sweepSlot`), so a
/// connection moves or leaves in O(log n) and a wake-up touches only the
/// connections that are due, not all of them.
///
/// Invariant: `heap[i].sweepSlot == i` for every entry, and an entry not in
/// the heap has `sweepSlot == -1`.
struct SweepQueue<Entry: SweepQueueEntry> {
    private var heap: [Entry] = []

    var count: Int { heap.count }

    /// The earliest due time, nil when nothing is queued.
    var earliest: Instant? { heap.first?.sweepDue }

    /// Queues `connection` to be looked at `due`, or moves it there.
    mutating func schedule(_ connection: Entry, at due: Instant) {
        let slot = connection.sweepSlot
        connection.sweepDue = due
        if slot < 0 {
            connection.sweepSlot = heap.count
            heap.append(connection)
            siftUp(heap.count - 1)
        } else {
            siftUp(slot)
            siftDown(connection.sweepSlot)
        }
    }

    /// Takes `connection` out; nothing if it is not queued.
    mutating func remove(_ connection: Entry) {
        let slot = connection.sweepSlot
        guard slot >= 0 else { return }
        precondition(slot < heap.count && heap[slot] === connection, "entry not at its slot in the sweep queue")
        let last = heap.removeLast()
        connection.sweepSlot = -1
        guard last !== connection else { return }
        heap[slot] = last
        last.sweepSlot = slot
        siftUp(slot)
        siftDown(last.sweepSlot)
    }

    /// The earliest connection due at or before `now`, taken out of the queue.
    mutating func popDue(now: Instant) -> Entry? {
        guard let first = heap.first, first.sweepDue <= now else { return nil }
        remove(first)
        return first
    }

    private func due(_ index: Int) -> Instant { heap[index].sweepDue }

    private mutating func swapEntries(_ a: Int, _ b: Int) {
        heap.swapAt(a, b)
        heap[a].sweepSlot = a
        heap[b].sweepSlot = b
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            if due(parent) <= due(child) { return }
            swapEntries(parent, child)
            child = parent
        }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count && due(left) < due(smallest) { smallest = left }
            if right < heap.count && due(right) < due(smallest) { smallest = right }
            if smallest == parent { return }
            swapEntries(parent, smallest)
            parent = smallest
        }
    }
}
