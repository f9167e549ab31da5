/// Work another thread hands to one loop: jobs queued under a lock, and an
/// eventfd that wakes the loop to run them on its own thread, in the order
/// they were posted. This is the only way one worker touches another's
/// state; nothing on the data path goes through it.
///
/// Invariant: a posted job touches only what belongs to the loop it runs on
/// (or values copied into it); it never waits for another loop.
final class LoopMailbox: EventHandler, @unchecked Sendable {
    private let jobs = Lock<[() -> Void]>([])
    private let wake: EventCounter
    private let replies: EventCounter
    private var registration: Registration?
    private unowned(unsafe) let loop: EventLoop

    /// Watches the mailbox on `loop`; call on the thread that will run `loop`.
    init(loop: EventLoop) throws(SystemError) {
        self.loop = loop
        wake = try EventCounter(blocking: false)
        replies = try EventCounter(blocking: false)
        registration = try loop.register(wake.descriptor, interest: [.readable], handler: self)
    }

    /// Queues `job` for the loop's thread. Any thread.
    func post(_ job: @escaping () -> Void) {
        jobs.withLock { $0.append(job) }
        wake.signal()
    }

    /// Runs `body` on the loop's thread and returns what it returned, or nil
    /// when the loop has not run it within `limit` (a stalled worker: the
    /// caller says so instead of hanging). Called by one thread at a time
    /// (the primary's), never by the loop's own.
    func ask<Answer>(within limit: Duration = .seconds(2), _ body: @escaping () -> Answer) -> Answer? {
        let box = Lock<Answer?>(nil)
        let replies = self.replies
        post {
            let answer = body()
            box.withLock { $0 = answer }
            replies.signal()
        }
        let deadline = Instant.now().adding(limit)
        while true {
            if let answer = box.withLock({ $0 }) { return answer }
            let left = deadline.since(Instant.now())
            // A late reply from an earlier, timed-out question only wakes this once more.
            guard left > .zero, replies.wait(within: left) || box.withLock({ $0 }) != nil else {
                return box.withLock { $0 }
            }
        }
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        wake.wait()
        let batch = jobs.withLock { queued in
            defer { queued.removeAll() }
            return queued
        }
        for job in batch { job() }
    }

    /// Stops watching; jobs posted later are never run.
    func close() {
        if let registration { loop.deregister(registration) }
        registration = nil
    }
}
