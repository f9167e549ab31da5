internal import Glibc

/// Whether a connection recovered from the descriptor store lost bytes inside
/// the process that held it (issue 11): a crash or a watchdog kill throws away
/// what sat in reaperd's pipes, and relaying on would hand the far peer a
/// stream with a hole, worse than a reset for any protocol.
///
/// The kernel's own counters tell, per direction: what the old process read
/// from the source socket (`tcpi_bytes_received` minus the unread queue,
/// SIOCINQ) against what it wrote to the destination socket
/// (`tcpi_bytes_acked` plus the unacknowledged queue, SIOCOUTQ). Both count a
/// FIN as one byte once it is received or sent, so FINs are taken out and only
/// data is compared. A socket that connect(2) opened also counts its SYN in
/// `tcpi_bytes_acked` (Linux 6.1 does; `synBias` asks the running kernel once).
/// Only TCP sockets have the counters: a connection with a Unix upstream
/// cannot be audited (`lostBytes` is nil) and relays on unchecked.
public enum CrashAudit {
    /// One socket as the kernel reports it after the restart.
    public struct Socket: Sendable {
        public var info: TCPInfo
        public var unread: Int
        public var unacknowledged: Int

        public init(info: TCPInfo, unread: Int, unacknowledged: Int) {
            self.info = info
            self.unread = unread
            self.unacknowledged = unacknowledged
        }

        /// Data bytes the old process read from this socket.
        var dataRead: Int64 {
            Int64(truncatingIfNeeded: info.bytesReceived) - Int64(unread) - (info.receivedFIN ? 1 : 0)
        }

        /// Whether connect(2) opened it (reaperd's upstream side), so its SYN
        /// may count in `bytesAcked`.
        public var openedByConnect = false

        /// Data bytes the old process wrote to this socket.
        func dataWritten(synBias: Int64) -> Int64 {
            Int64(truncatingIfNeeded: info.bytesAcked) + Int64(unacknowledged) - (info.sentFIN ? 1 : 0)
                - (openedByConnect ? synBias : 0)
        }

        /// Reads it now; nil when it has no TCP counters (a Unix socket).
        static func read(_ fd: Int32, openedByConnect: Bool) -> Socket? {
            guard let info = try? TCPInfo.read(fd), let queues = try? TCPInfo.queues(fd) else { return nil }
            var socket = Socket(info: info, unread: queues.unread, unacknowledged: queues.unacknowledged)
            socket.openedByConnect = openedByConnect
            return socket
        }
    }

    /// Bytes that died inside the old process, both directions together; 0 when
    /// every byte read was written. `upstream` nil is echo: the client socket is
    /// both ends.
    public static func lostBytes(client: Socket, upstream: Socket?, synBias: Int64) -> UInt64 {
        let destination = upstream ?? client
        var lost = abs(client.dataRead - destination.dataWritten(synBias: synBias))
        if let upstream { lost += abs(upstream.dataRead - client.dataWritten(synBias: synBias)) }
        return UInt64(lost)
    }

    /// The audit of a recovered pair of sockets; nil when it cannot be made.
    static func lostBytes(clientFD: Int32, upstreamFD: Int32?, synBias: Int64) -> UInt64? {
        guard let client = Socket.read(clientFD, openedByConnect: false) else { return nil }
        guard let upstreamFD else { return lostBytes(client: client, upstream: nil, synBias: synBias) }
        guard let upstream = Socket.read(upstreamFD, openedByConnect: true) else { return nil }
        return lostBytes(client: client, upstream: upstream, synBias: synBias)
    }

    /// What the running kernel counts for a SYN in `tcpi_bytes_acked` of a
    /// socket connect(2) opened: asked once, over loopback. nil when it cannot
    /// be told (then no audit is trusted).
    static func synBias() -> Int64? {
        guard let listener = try? Sockets.stream(family: AF_INET),
            let any = SocketAddress(ip: "127.0.0.1", port: 0),
            (try? Sockets.bind(listener.raw, any)) != nil, (try? Sockets.listen(listener.raw, backlog: 1)) != nil,
            let address = try? Sockets.localAddress(listener.raw),
            let client = try? Sockets.stream(family: AF_INET),
            (try? Sockets.connect(client.raw, address)) != nil,
            Sockets.waitWritable(client.raw, timeoutMilliseconds: 1000),
            let info = try? TCPInfo.read(client.raw), info.isEstablished
        else { return nil }
        return Int64(truncatingIfNeeded: info.bytesAcked)
    }
}
