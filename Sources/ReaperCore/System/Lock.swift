internal import Glibc

/// State shared between threads behind a `pthread_mutex_t`.
///
/// Not `Synchronization.Mutex`: on Linux it waits on a bare futex, which
/// ThreadSanitizer cannot see, so every access it guards reads as a race to the
/// sanitizer CI runs. A pthread mutex is intercepted, and costs the same on the
/// uncontended path reaperd takes (one lookup per named upstream per interval).
final class Lock<State>: @unchecked Sendable {
    // Invariant: `state` is read or written only while `mutex` is held.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var state: State

    init(_ state: State) {
        self.state = state
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: (inout State) -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body(&state)
    }
}
