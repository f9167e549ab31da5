/// A one-shot timer on the loop. Cancelling only marks it; the queue drops it
/// when it comes up, which keeps cancellation O(1).
public final class LoopTimer {
    public let deadline: Instant
    let action: () -> Void
    public private(set) var isCancelled = false

    init(deadline: Instant, action: @escaping () -> Void) {
        self.deadline = deadline
        self.action = action
    }

    public func cancel() { isCancelled = true }
}

/// A binary min-heap of timers by deadline.
struct TimerQueue {
    private var heap: [LoopTimer] = []
    private var insertsSinceCompaction = 0

    var count: Int { heap.count }

    mutating func insert(_ timer: LoopTimer) {
        // Connect timeouts are cancelled by the thousand at high accept rates and
        // would otherwise stay until their deadline: drop them now and then.
        insertsSinceCompaction += 1
        if insertsSinceCompaction >= 1024 && heap.count >= 2048 {
            insertsSinceCompaction = 0
            compact()
        }
        heap.append(timer)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if heap[parent].deadline <= heap[child].deadline { break }
            heap.swapAt(parent, child)
            child = parent
        }
    }

    /// The earliest live timer whose deadline has passed, removed from the queue.
    mutating func popDue(now: Instant) -> LoopTimer? {
        while let first = heap.first {
            if first.isCancelled {
                removeFirst()
                continue
            }
            guard first.deadline <= now else { return nil }
            removeFirst()
            return first
        }
        return nil
    }

    /// epoll_wait's timeout: -1 with no timers, otherwise rounded up so the loop
    /// never wakes a millisecond early and spins.
    func millisecondsUntilNext(from now: Instant) -> Int32 {
        guard let first = heap.first else { return -1 }
        if first.deadline <= now { return 0 }
        let nanoseconds = first.deadline.nanoseconds - now.nanoseconds
        return Int32(clamping: (nanoseconds + 999_999) / 1_000_000)
    }

    /// Removes cancelled timers and restores the heap order, in O(n).
    private mutating func compact() {
        heap.removeAll { $0.isCancelled }
        var index = heap.count / 2
        while index > 0 {
            index -= 1
            siftDown(from: index)
        }
    }

    private mutating func siftDown(from start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count && heap[left].deadline < heap[smallest].deadline { smallest = left }
            if right < heap.count && heap[right].deadline < heap[smallest].deadline { smallest = right }
            if smallest == parent { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }

    private mutating func removeFirst() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        siftDown(from: 0)
    }
}
