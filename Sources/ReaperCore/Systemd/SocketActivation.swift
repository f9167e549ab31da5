internal import CSystemd
internal import Glibc

/// A listening socket passed by systemd (`sd_listen_fds_with_names`), with the
/// `FileDescriptorName=` that selects the listener it serves.
public struct ActivatedSocket {
    public let name: String
    public let descriptor: Int32
}

public enum SocketActivation {
    /// Sockets passed to this process; the environment variables are removed so
    /// children do not inherit them. Each descriptor is made non-blocking and
    /// close-on-exec: reaperd's loop needs the first, and exec'd children must not
    /// hold listeners.
    public static func receive() -> [ActivatedSocket] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let count = sd_listen_fds_with_names(1, &names)
        guard count > 0 else { return [] }
        defer {
            if let names {
                for index in 0..<Int(count) { free(names[index]) }
                free(names)
            }
        }
        var sockets: [ActivatedSocket] = []
        for index in 0..<Int(count) {
            let fd = SD_LISTEN_FDS_START + Int32(index)
            let name = names?[index].map { String(cString: $0) } ?? "unknown"
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            sockets.append(ActivatedSocket(name: name, descriptor: fd))
        }
        return sockets
    }
}
