internal import CLinuxShim
internal import Glibc

/// One TCP socket as a NETLINK_SOCK_DIAG dump reports it: no descriptor held,
/// identified across sweeps by its socket cookie (never by fd or 4-tuple).
struct DiagSocket {
    fileprivate var raw: cls_diag_socket
    let info: TCPInfo?

    var cookie: UInt64 { raw.cookie }
    var inode: UInt32 { raw.inode }
    var state: UInt8 { raw.state }
    var localPort: UInt16 { raw.local_port }
    var local: SocketAddress? { Self.address(raw.family, raw.local_address, raw.local_port) }
    var remote: SocketAddress? { Self.address(raw.family, raw.remote_address, raw.remote_port) }

    private static func address(
        _ family: UInt8,
        _ bytes: (
            UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
            UInt8
        ),
        _ port: UInt16
    ) -> SocketAddress? {
        var copy = bytes
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let ok = withUnsafeBytes(of: &copy) { raw in
            inet_ntop(Int32(family), raw.baseAddress, &text, socklen_t(text.count)) != nil
        }
        guard ok else { return nil }
        return SocketAddress(
            ip: String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), port: port)
    }
}

/// A NETLINK_SOCK_DIAG socket: one dump per family and cgroup returns every
/// TCP socket of a service with its TCP_INFO (no privilege needed), and
/// SOCK_DESTROY ends one (CAP_NET_ADMIN; the owner sees ECONNABORTED, the
/// peer an RST).
final class SockDiag {
    private let socket: FileDescriptor
    /// Grows to the largest dump seen, so a steady sweep allocates nothing new.
    private var sockets: [cls_diag_socket] = Array(repeating: cls_diag_socket(), count: 256)
    private var infos: [cls_tcp_info] = Array(repeating: cls_tcp_info(), count: 256)

    init() throws(AdoptError) {
        let fd = cls_diag_open()
        guard fd >= 0 else { throw AdoptError("opening a NETLINK_SOCK_DIAG socket", Errno(-fd)) }
        socket = FileDescriptor(owning: fd)
    }

    /// The TCP sockets of the cgroup `cgroupID` (its directory's inode), listening ones excepted.
    func dump(cgroupID: UInt64) throws(AdoptError) -> [DiagSocket] {
        var all: [DiagSocket] = []
        for family in [AF_INET, AF_INET6] {
            while true {
                let capacity = sockets.count
                let matched = sockets.withUnsafeMutableBufferPointer { out in
                    infos.withUnsafeMutableBufferPointer { info in
                        cls_diag_dump(socket.raw, family, cgroupID, out.baseAddress, info.baseAddress, Int32(capacity))
                    }
                }
                guard matched >= 0 else { throw AdoptError("sock_diag dump", Errno(-matched)) }
                if Int(matched) > capacity {
                    // Room for what is there now, and some to grow: dump again.
                    let room = Int(matched) * 2
                    sockets = Array(repeating: cls_diag_socket(), count: room)
                    infos = Array(repeating: cls_tcp_info(), count: room)
                    continue
                }
                for index in 0..<Int(matched) {
                    let raw = sockets[index]
                    all.append(DiagSocket(raw: raw, info: raw.has_info != 0 ? TCPInfo(infos[index]) : nil))
                }
                break
            }
        }
        return all
    }

    /// SOCK_DESTROY, matched by the kernel on the socket's cookie.
    func destroy(_ target: DiagSocket) throws(AdoptError) {
        var raw = target.raw
        let result = cls_diag_destroy(socket.raw, &raw)
        // Already gone (closed meanwhile): nothing left to destroy.
        guard result == 0 || result == -ENOENT else { throw AdoptError("sock_diag SOCK_DESTROY", Errno(-result)) }
    }
}
