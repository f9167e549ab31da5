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

    /// Where the daemon's socket is when none is named: the configured default,
    /// or the fallbacks the embedded default uses when /run/reaperd is not writable.
    public static func defaultSocketPath() -> String {
        for candidate in ControlSocketPath.candidates() where Files.isSocket(candidate) { return candidate }
        return ControlSocketPath.standard
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
            throw Failure(description: "\(socketPath): \(error)")
        } catch let error as Failure {
            throw error
        } catch {
            throw Failure(description: "\(socketPath): \(error)")
        }
    }
}

/// Where the control socket lives.
public enum ControlSocketPath {
    public static let standard = "/run/reaperd/control.sock"

    /// The standard path, then `$XDG_RUNTIME_DIR/reaperd.sock`, then
    /// `/tmp/reaperd-UID.sock`.
    public static func candidates() -> [String] {
        var paths = [standard]
        if let runtime = Files.environment("XDG_RUNTIME_DIR"), !runtime.isEmpty {
            paths.append(runtime + "/reaperd.sock")
        }
        paths.append("/tmp/reaperd-\(getuid()).sock")
        return paths
    }

    /// For the embedded default: the standard path when its directory exists or
    /// can be made, else the first fallback whose directory is writable.
    public static func forEmbeddedDefault() -> String {
        if Files.isWritableDirectory("/run/reaperd")
            || (Files.makeDirectory("/run/reaperd", mode: 0o750) && Files.isWritableDirectory("/run/reaperd"))
        {
            return standard
        }
        for candidate in candidates().dropFirst() {
            let directory = String(candidate[..<(candidate.lastIndex(of: "/") ?? candidate.startIndex)])
            if Files.isWritableDirectory(directory) { return candidate }
        }
        return standard
    }

    /// Makes the socket's directory if it is missing (outside systemd, where no
    /// RuntimeDirectory= made it).
    public static func prepareDirectory(for path: String) {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        let directory = String(path[..<slash])
        if !Files.exists(directory) { _ = Files.makeDirectory(directory, mode: 0o750) }
    }
}
