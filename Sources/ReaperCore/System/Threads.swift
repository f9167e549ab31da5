internal import CLinuxShim
internal import Glibc

/// Plain POSIX threads, for the one job that must block off the loop (host
/// name lookups). No Foundation: a detached pthread running a closure.
enum Threads {
    private final class Start {
        let name: String
        let body: @Sendable () -> Void
        init(_ name: String, _ body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Runs `body` on a new detached thread named `name` (the first 15 bytes,
    /// shown by `ps -L` and `top -H`). The corresponding C functions are
    /// `pthread_create`, `pthread_detach` and `pthread_setname_np`.
    static func startDetached(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        let context = Unmanaged.passRetained(Start(name, body)).toOpaque()
        var thread = pthread_t()
        let code = pthread_create(
            &thread, nil,
            { raw in
                guard let raw else { return nil }
                let start = Unmanaged<Start>.fromOpaque(raw).takeRetainedValue()
                // From inside: the thread may be gone before its creator could name it.
                cls_name_this_thread(start.name)
                start.body()
                return nil
            }, context)
        guard code == 0 else {
            Unmanaged<Start>.fromOpaque(context).release()
            throw SystemError("pthread_create", Errno(code))
        }
        pthread_detach(thread)
    }
}
