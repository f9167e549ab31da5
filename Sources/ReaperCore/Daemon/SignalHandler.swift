internal import Glibc

/// SIGTERM, SIGINT and SIGHUP as loop events (STYLE 11).
final class SignalHandler: EventHandler {
    private let signals: SignalDescriptor
    private unowned let daemon: Daemon

    init(daemon: Daemon) throws(SystemError) {
        signals = try SignalDescriptor([SIGTERM, SIGINT, SIGHUP])
        self.daemon = daemon
    }

    func register(on loop: EventLoop) throws(SystemError) {
        _ = try loop.register(signals.descriptor.raw, interest: [.readable], handler: self)
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        while let number = signals.next() {
            switch number {
            case SIGHUP: _ = daemon.reload(trigger: "SIGHUP")
            case SIGTERM: daemon.beginShutdown(signal: "SIGTERM")
            case SIGINT: daemon.beginShutdown(signal: "SIGINT")
            default: break
            }
        }
    }
}
