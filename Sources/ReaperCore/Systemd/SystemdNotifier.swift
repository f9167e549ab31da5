internal import CSystemd

/// sd_notify(3) through libsystemd. Without NOTIFY_SOCKET every call is a no-op,
/// which is libsystemd's own behaviour.
public final class SystemdNotifier: ServiceNotifier {
    public let watchdogPingInterval: Duration?

    public init() {
        var microseconds: UInt64 = 0
        // sd_watchdog_enabled checks WATCHDOG_PID against our pid, so a child
        // process that inherited the variables does not ping for us.
        if sd_watchdog_enabled(0, &microseconds) > 0 && microseconds > 0 {
            watchdogPingInterval = .microseconds(Int64(microseconds / 2))
        } else {
            watchdogPingInterval = nil
        }
    }

    public func send(_ assignments: String) {
        _ = sd_notify(0, assignments)
    }

    /// True when a service manager asked for notifications.
    public static var isSupervised: Bool { Files.environment("NOTIFY_SOCKET") != nil }
}
