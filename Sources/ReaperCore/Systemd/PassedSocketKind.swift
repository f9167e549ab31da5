internal import CLinuxShim
internal import CSystemd
internal import Glibc

/// What a descriptor passed by systemd really is. A socket unit with
/// `Accept=yes` passes a connected socket, one with `ListenDatagram=` a
/// datagram socket; neither can be accepted on (accept4 fails with EINVAL),
/// so each descriptor is classified before reaperd relies on it.
public enum PassedSocketKind: Equatable, Sendable, CustomStringConvertible {
    /// What a listener needs: SOCK_STREAM with listen(2) done.
    case listeningStream
    /// SOCK_STREAM, not listening: what a stored connection side must be.
    case stream
    case datagram
    case sequentialPacket
    case otherSocket(type: Int32)
    case notASocket

    /// In an operator's words, for "… is not a listening stream socket (datagram)".
    public var description: String {
        switch self {
        case .listeningStream: "listening stream"
        case .stream: "a stream socket that is not listening, such as an accepted connection"
        case .datagram: "datagram"
        case .sequentialPacket: "sequential packet"
        case .otherSocket(let type): "socket type \(type)"
        case .notASocket: "not a socket"
        }
    }

    /// Classifies `fd` with sd_is_socket(3), and SO_TYPE to name the other kinds.
    public init(of fd: Int32) {
        if sd_is_socket(fd, AF_UNSPEC, CLS_SOCK_STREAM, 1) > 0 {
            self = .listeningStream
        } else if sd_is_socket(fd, AF_UNSPEC, CLS_SOCK_STREAM, 0) > 0 {
            self = .stream
        } else if sd_is_socket(fd, AF_UNSPEC, 0, -1) <= 0 {
            self = .notASocket
        } else {
            switch (try? Sockets.option(fd, level: SOL_SOCKET, name: SO_TYPE)) ?? -1 {
            case CLS_SOCK_DGRAM: self = .datagram
            case Int32(SOCK_SEQPACKET.rawValue): self = .sequentialPacket
            case let type: self = .otherSocket(type: type)
            }
        }
    }
}

extension ActivatedSocket {
    /// What the descriptor is, asked of the kernel now.
    public var kind: PassedSocketKind { PassedSocketKind(of: descriptor) }
}
