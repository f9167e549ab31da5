/// Sockets systemd passed at start, checked for kind before reaperd relies on
/// them: a socket unit with `Accept=yes` or `ListenDatagram=` passes sockets
/// that cannot be accepted on, and accept4 failing with EINVAL on each would
/// leave the daemon READY and serving nothing.
extension Daemon {
    /// Every socket from a socket unit, and every listening socket back from the
    /// descriptor store (`l@…`), must be a listening stream socket. Anything
    /// else is a unit written wrongly: refused at start (exit 78, ERRNO=).
    func refuseWrongKindListeners() throws(StartError) {
        for socket in activated {
            let kind = socket.kind
            guard kind != .listeningStream else { continue }
            throw StartError(
                message:
                    "socket passed by systemd with FileDescriptorName=\(socket.name) is not a listening stream socket (\(kind))",
                errno: kind == .notASocket ? Errno.notASocket.code : Errno.invalid.code, isConfiguration: true)
        }
        for socket in storedListeners {
            let kind = socket.kind
            guard kind != .listeningStream else { continue }
            throw StartError(
                message:
                    "socket \(socket.name) from the file descriptor store is not a listening stream socket (\(kind))",
                errno: kind == .notASocket ? Errno.notASocket.code : Errno.invalid.code, isConfiguration: true)
        }
    }

    /// A stored connection side (`c@…`, `u@…`) that is not a stream socket, or
    /// is a listening one, is no connection: logged, removed from the store and
    /// closed here, never adopted. True when `socket` may be adopted.
    func admitStoredConnectionSide(_ socket: ActivatedSocket) -> Bool {
        let kind = socket.kind
        guard kind != .stream else { return true }
        logger.warning(
            "stored connection socket \(socket.name) is not a stream connection (\(kind)); closed and removed from the store",
            [("REAPERD_FDNAME", socket.name), ("REAPERD_KIND", "\(kind)")])
        unstore(socket.name)
        FileDescriptor(owning: socket.descriptor).close()
        return false
    }
}
