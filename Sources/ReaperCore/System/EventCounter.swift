internal import CLinuxShim
internal import Glibc

/// An eventfd(2): how another thread wakes the loop. Writes add to a counter;
/// the descriptor is readable while the counter is not zero, and one read
/// takes it back to zero, so any number of wake-ups before the loop turns
/// cost it one event.
///
/// Closed when the last reference goes: whoever watches it with epoll
/// deregisters it first, and a thread that may still signal it holds a reference.
final class EventCounter: Sendable {
    /// The kernel's number, for epoll.
    let descriptor: Int32

    /// A new counter at zero. `blocking`: `wait()` sleeps until it is not
    /// zero (a worker thread's queue); otherwise reads never block (the loop's).
    /// The corresponding C function is `eventfd`.
    init(blocking: Bool) throws(SystemError) {
        descriptor = try syscall("eventfd") { cls_eventfd(blocking ? 0 : 1) }
    }

    /// Adds one. Never fails short of a bug: the counter would need 2^64 - 1
    /// wake-ups unread to block.
    func signal() {
        var one: UInt64 = 1
        _ = try? syscall("write(eventfd)") { write(descriptor, &one, MemoryLayout<UInt64>.size) }
    }

    /// Takes the counter back to zero; on a blocking counter, first waits
    /// until it is not zero. Returns how many signals it held (0: none).
    @discardableResult
    func wait() -> UInt64 {
        var value: UInt64 = 0
        let result = try? nonBlockingSyscall("read(eventfd)") { read(descriptor, &value, MemoryLayout<UInt64>.size) }
        guard case .processed = result else { return 0 }
        return value
    }

    /// Waits at most `limit` for the counter to be non-zero, then takes it
    /// back to zero; false when the time ran out first. For a non-blocking
    /// counter read by a thread that must not wait for ever. The
    /// corresponding C function is `poll`.
    func wait(within limit: Duration) -> Bool {
        let deadline = Instant.now().adding(limit)
        while true {
            if wait() > 0 { return true }
            let left = deadline.since(Instant.now())
            guard left > .zero else { return false }
            var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&entry, 1, Int32(clamping: max(1, left.milliseconds)))
        }
    }

    deinit { Glibc.close(descriptor) }
}
