internal import Glibc

/// Opening listening sockets, and the error an operator reads when it fails.
public enum ListeningSocket {
    /// "listener pg: bind 0.0.0.0:6432: Address already in use".
    public struct OpenError: Error, Sendable, CustomStringConvertible {
        public let listener: String
        public let endpoint: String
        public let failure: SystemError
        public var description: String { "listener \(listener): \(failure.call) \(endpoint): \(failure.errno)" }
    }

    /// A bound, listening, non-blocking socket.
    ///
    /// `SO_REUSEADDR` is set before `bind` so a restarted daemon binds at once
    /// while connections of its previous life sit in TIME_WAIT; it never lets two
    /// live listeners share a port (that is `SO_REUSEPORT`, only when asked).
    /// IPv6 sockets are v6-only so `0.0.0.0:P` and `[::]:P` can both be listed.
    ///
    /// Keepalive, user timeout and no-delay are set on the listening socket itself:
    /// Linux copies them to each accepted socket, which saves six system calls per
    /// client. `configure` does the same for sockets passed by systemd.
    public static func open(
        listener: String, endpoint: Endpoint, backlog: Int, reusePort: Bool, settings: ConnectionSettings? = nil
    ) throws(OpenError) -> FileDescriptor {
        let address = endpoint.socketAddress
        do {
            let socket = try Sockets.stream(family: address.family)
            try Sockets.setOption(socket.raw, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
            if reusePort { try Sockets.setOption(socket.raw, level: SOL_SOCKET, name: SO_REUSEPORT, value: 1) }
            if address.family == AF_INET6 {
                try Sockets.setOption(socket.raw, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: 1)
            }
            if let settings { try configure(socket.raw, settings) }
            try Sockets.bind(socket.raw, address)
            try Sockets.listen(socket.raw, backlog: backlog)
            return socket
        } catch {
            throw OpenError(listener: listener, endpoint: endpoint.description, failure: error)
        }
    }

    /// The options accepted sockets inherit (see `open`).
    public static func configure(_ fd: Int32, _ settings: ConnectionSettings) throws(SystemError) {
        try SocketOptions.applyKeepalive(fd, settings)
        SocketOptions.disableNagle(fd)
    }
}
