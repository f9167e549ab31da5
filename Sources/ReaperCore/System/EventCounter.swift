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

    deinit { Glibc.close(descriptor) }
}
