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

    /// A socket back from the descriptor store must be what its name says: a
    /// listening stream socket for `l@…`, a stream connection for `c@…`/`u@…`.
    /// One that is not was not written by the operator, so refusing to start
    /// would only keep the service down: it is logged, removed from the store
    /// and closed here, never adopted (the listener then binds afresh). True
    /// when `socket` may be adopted.
    func admitStored(_ socket: ActivatedSocket, as expected: PassedSocketKind) -> Bool {
        let kind = socket.kind
        guard kind != expected else { return true }
        let what = expected == .listeningStream ? "listening socket" : "connection socket"
        let should = expected == .listeningStream ? "a listening stream socket" : "a stream connection"
        dropStored(socket, what: what, because: "is not \(should) (\(kind))")
        return false
    }

    /// Logs, removes from the store and closes a socket the store gave back
    /// that cannot be used.
    func dropStored(_ socket: ActivatedSocket, what: String = "socket", because why: String) {
        logger.warning(
            "stored \(what) \(socket.name) \(why); closed and removed from the store",
            [("REAPERD_FDNAME", socket.name), ("REAPERD_KIND", "\(socket.kind)")])
        unstore(socket.name)
        FileDescriptor(owning: socket.descriptor).close()
    }
}
