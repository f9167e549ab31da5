/// One bound listening socket of a listener, watched for incoming clients.
///
/// Watched means registered with the loop; `Daemon.updateWatch` alone decides
/// it, from `pause`, the daemon's `acceptPaused` and `stopping`.
final class ListeningEndpoint: EventHandler {
    /// Identifies the socket across reloads: the configured endpoint, or
    /// `fd:N` for a socket passed by systemd.
    let key: String
    /// What the socket is bound to, as the kernel reports it.
    let address: String
    let socket: FileDescriptor
    var listener: ListenerState
    /// Passed by systemd socket activation: never closed by a reload.
    let activated: Bool
    /// nil while not watched (paused, stopping, or not yet registered).
    var registration: Registration?
    /// Set while accepting on this endpoint is paused after accept failed on it;
    /// firing watches it again.
    var pause: LoopTimer?
    private unowned let daemon: Daemon

    init(
        key: String, address: String, socket: consuming FileDescriptor, listener: ListenerState, activated: Bool,
        daemon: Daemon
    ) {
        self.key = key
        self.address = address
        self.socket = socket
        self.listener = listener
        self.activated = activated
        self.daemon = daemon
    }

    func handle(_ events: EpollEvents, on registration: Registration) {
        daemon.accept(from: self)
    }
}
