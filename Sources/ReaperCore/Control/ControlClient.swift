internal import Glibc

/// reaperctl's side of the control socket: one request line, one answer.
public enum ControlClient {
    public struct Answer: Sendable {
        public let ok: Bool
        /// The body after `OK`, or the message after `ERR`.
        public let text: String
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Where the daemon's socket is when none is named: the first of the places
    /// the daemon may put it (`ControlSocketPath.candidates`) that holds a socket.
    public static func defaultSocketPath() -> String {
        for candidate in ControlSocketPath.candidates() where Files.isSocket(candidate) { return candidate }
        return ControlSocketPath.standard
    }

    /// What an operator should check, for the errors that have a usual cause.
    static func hint(for errno: Errno) -> String {
        switch errno.code {
        case ECONNREFUSED, ENOENT:
            "\n  is reaperd running? (systemctl status reaperd, or reaperd-adopt; the path is [daemon] "
                + "control_socket, or --socket PATH)"
        case EACCES, EPERM:
            "\n  the socket is mode 0660: run as root, or as a member of the group that owns it (ls -l the path)"
        default:
            ""
        }
    }

    public static func request(_ line: String, socketPath: String, timeoutSeconds: Int = 60) throws(Failure) -> Answer {
        guard let address = SocketAddress(unixPath: socketPath) else {
            throw Failure(description: "control socket path too long: \(socketPath)")
        }
        do {
            let socket = try Sockets.stream(family: AF_UNIX)
            try Sockets.makeBlocking(socket.raw, timeoutSeconds: timeoutSeconds)
            _ = try Sockets.connect(socket.raw, address)
            try Sockets.sendAll(socket.raw, Array((line + "\n").utf8))
            var response: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = try Sockets.readBlocking(socket.raw, into: &chunk)
                if count == 0 { break }
                response.append(contentsOf: chunk[0..<count])
            }
            let text = String(decoding: response, as: UTF8.self)
            if text.hasPrefix("OK\n") { return Answer(ok: true, text: String(text.dropFirst(3))) }
            if text.hasPrefix("ERR ") { return Answer(ok: false, text: String(text.dropFirst(4))) }
            throw Failure(description: "unexpected answer from \(socketPath): \(text.prefix(80))")
        } catch let error as SystemError {
            throw Failure(description: "\(socketPath): \(error)" + hint(for: error.errno))
        } catch let error as Failure {
            throw error
        } catch {
            throw Failure(description: "\(socketPath): \(error)")
        }
    }
}
