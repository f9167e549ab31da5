internal import CLinuxShim
internal import Glibc

/// What the kernel reports about one TCP socket (`getsockopt(TCP_INFO)`), trimmed
/// to the fields reaperd classifies health with. A value: one read, one snapshot.
public struct TCPInfo: Hashable, Sendable {
    /// `tcpi_state` values from <netinet/tcp.h>.
    public enum State: UInt8, Sendable {
        case established = 1
        case synSent, synReceived, finWait1, finWait2, timeWait, close, closeWait,
            lastAck, listen, closing
    }

    public var state: UInt8 = 0
    /// Keepalive or zero-window probes sent and not answered (`tcpi_probes`).
    public var probes: UInt8 = 0
    /// Retransmission backoff exponent: data is unacknowledged and being resent.
    public var backoff: UInt8 = 0
    public var retransmits: UInt8 = 0
    /// Segments sent and not yet acknowledged.
    public var unacked: UInt32 = 0
    /// Bytes queued but not yet sent (e.g. a zero window); 0 on kernels without it.
    public var notSentBytes: UInt32 = 0
    public var sendWindow: UInt32 = 0
    public var rttMicroseconds: UInt32 = 0
    public var lastDataReceivedMilliseconds: UInt32 = 0
    public var lastAckReceivedMilliseconds: UInt32 = 0
    public var bytesAcked: UInt64 = 0
    public var bytesReceived: UInt64 = 0

    public init() {}

    public var isEstablished: Bool { state == State.established.rawValue }
    public var isClosed: Bool { state == State.close.rawValue }

    /// Bytes the kernel still owes the peer: sent-unacknowledged or queued behind a
    /// closed window. This is what tells `user-timeout` from `keepalive`.
    public var hasDataInFlight: Bool { unacked > 0 || notSentBytes > 0 || backoff > 0 }

    /// Bytes received and not yet read (`SIOCINQ`), and bytes written and not
    /// yet acknowledged (`SIOCOUTQ`, our FIN counted once sent). The
    /// corresponding C function is `ioctl`.
    public static func queues(_ fd: Int32) throws(SystemError) -> (unread: Int, unacknowledged: Int) {
        var unread: Int32 = 0
        var unacknowledged: Int32 = 0
        _ = try syscall("ioctl(SIOCINQ)") { cls_socket_unread(fd, &unread) }
        _ = try syscall("ioctl(SIOCOUTQ)") { cls_socket_unacked(fd, &unacknowledged) }
        return (Int(unread), Int(unacknowledged))
    }

    /// The peer's FIN has arrived (it counts one in `bytesReceived`).
    public var receivedFIN: Bool {
        [State.closeWait, .lastAck, .closing, .timeWait, .close].contains { $0.rawValue == state }
    }

    /// Our FIN has been sent (it counts one in `bytesAcked` + `SIOCOUTQ`).
    public var sentFIN: Bool {
        [State.finWait1, .finWait2, .closing, .lastAck, .timeWait].contains { $0.rawValue == state }
    }

    /// Reads the socket's TCP_INFO. The corresponding C function is `getsockopt`.
    public static func read(_ fd: Int32) throws(SystemError) -> TCPInfo {
        var raw = cls_tcp_info()
        _ = try syscall("getsockopt(TCP_INFO)") { cls_tcp_info(fd, &raw) }
        return TCPInfo(raw)
    }

    /// From the shim's copy of the kernel's struct (getsockopt, or a sock_diag dump).
    init(_ raw: cls_tcp_info) {
        var info = TCPInfo()
        info.state = raw.state
        info.probes = raw.probes
        info.backoff = raw.backoff
        info.retransmits = raw.retransmits
        info.unacked = raw.unacked
        info.notSentBytes = raw.notsent_bytes
        info.sendWindow = raw.snd_wnd
        info.rttMicroseconds = raw.rtt_usec
        info.lastDataReceivedMilliseconds = raw.last_data_recv_ms
        info.lastAckReceivedMilliseconds = raw.last_ack_recv_ms
        info.bytesAcked = raw.bytes_acked
        info.bytesReceived = raw.bytes_received
        self = info
    }
}
