/// Sockets systemd passed at start, checked for kind before reaperd relies on
/// them: a socket unit with `Accept=yes` or `ListenDatagram=` passes sockets
/// that cannot be accepted on, and accept4 failing with EINVAL on each would
/// leave the daemon READY and serving nothing.
extension Daemon {
    /// Every socket from a socket unit must be a listening stream socket.
    /// Anything else is a unit written wrongly: refused at start (exit 78, ERRNO=).
    func refuseWrongKindListeners() throws(StartError) {
        for socket in activated {
            let kind = socket.kind
            guard kind != .listeningStream else { continue }
            throw StartError(
                message:
                    "socket passed by systemd with FileDescriptorName=\(socket.name) is not a listening stream socket (\(kind))",
                errno: kind == .notASocket ? Errno.notASocket.code : Errno.invalid.code, isConfiguration: true)
        }
    }
}
