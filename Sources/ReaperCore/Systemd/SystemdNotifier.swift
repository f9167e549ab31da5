internal import CSystemd

/// The notify protocol (sd_notify(3)) through the one `NotifySender` queue the
/// descriptor store shares, so READY, STATUS, WATCHDOG and FDSTORE messages
/// keep their order and none blocks the loop. Only when `$NOTIFY_SOCKET` is no
/// Unix socket the sender can reach (systemd 254+ also accepts vsock: there)
/// does it fall back to libsystemd's blocking sd_notify.
public final class SystemdNotifier: ServiceNotifier {
    public let watchdogPingInterval: Duration?
    private let sender: NotifySender?

    public init(sender: NotifySender?) {
        self.sender = sender
        var microseconds: UInt64 = 0
        // sd_watchdog_enabled checks WATCHDOG_PID against our pid, so a child
        // process that inherited the variables does not ping for us.
        if sd_watchdog_enabled(0, &microseconds) > 0 && microseconds > 0 {
            watchdogPingInterval = Self.pingInterval(watchdogMicroseconds: microseconds)
        } else {
            watchdogPingInterval = nil
        }
    }

    /// The shortest ping interval. The loop waits in whole milliseconds
    /// (epoll_wait), so a shorter one cannot be kept anyway, and a timer that is
    /// due again as soon as it has fired would keep the loop from ever reaching
    /// epoll_wait. 1000 datagrams a second is still cheap for both sides.
    public static let minimumPingInterval = Duration.milliseconds(1)

    /// Half of WATCHDOG_USEC (sd_watchdog_enabled(3) advises pinging at half the
    /// timeout), never below `minimumPingInterval`: WATCHDOG_USEC=1 gives 0 µs.
    public static func pingInterval(watchdogMicroseconds: UInt64) -> Duration {
        max(.microseconds(Int64(clamping: watchdogMicroseconds / 2)), minimumPingInterval)
    }

    public func send(_ assignments: String) {
        if let sender {
            sender.send(assignments)
        } else {
            _ = sd_notify(0, assignments)
        }
    }

    public func attach(to loop: EventLoop) { sender?.attach(to: loop) }

    public func flush(within limit: Duration) { sender?.flush(within: limit) }

    /// True when a service manager asked for notifications.
    public static var isSupervised: Bool { Files.environment("NOTIFY_SOCKET") != nil }
}
