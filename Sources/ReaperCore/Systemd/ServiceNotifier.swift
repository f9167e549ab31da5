/// The service manager's side of the conversation (sd_notify). Behind a
/// protocol so unit tests can capture it; integration tests use a real
/// NOTIFY_SOCKET with `SystemdNotifier`.
public protocol ServiceNotifier: AnyObject {
    /// Sends newline-separated `KEY=value` assignments, in order, never blocking.
    func send(_ assignments: String)
    /// Half of WATCHDOG_USEC when the watchdog is on for this process, else nil.
    var watchdogPingInterval: Duration? { get }
    /// Lets messages that could not go out at once wait for `loop`.
    func attach(to loop: EventLoop)
    /// At exit: sends what is still queued, waiting at most `limit`.
    func flush(within limit: Duration)
}

extension ServiceNotifier {
    public func attach(to loop: EventLoop) {}
    public func flush(within limit: Duration) {}

    public func ready(status: String) { send("READY=1\nSTATUS=\(status)") }

    /// RELOADING=1 with MONOTONIC_USEC, as systemd 253+ expects for
    /// Type=notify-reload and 252 accepts.
    public func reloading() { send("RELOADING=1\nMONOTONIC_USEC=\(Instant.now().microseconds)\nSTATUS=reloading") }

    public func stopping(status: String) { send("STOPPING=1\nSTATUS=\(status)") }

    public func status(_ text: String) { send("STATUS=\(text)") }

    public func watchdogPing() { send("WATCHDOG=1") }

    public func failed(errno: Int32, status: String) { send("ERRNO=\(errno)\nSTATUS=\(status)") }
}

/// Used when no service manager is listening (NOTIFY_SOCKET unset).
public final class SilentNotifier: ServiceNotifier {
    public init() {}
    public func send(_ assignments: String) {}
    public var watchdogPingInterval: Duration? { nil }
}
