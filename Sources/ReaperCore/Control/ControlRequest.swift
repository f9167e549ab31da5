/// A request on the control socket: one line of words, as `reaperctl` sends
/// them (`status --json`, `connections --listener pg`, `reap 12`, `reload`).
public enum ControlRequest: Equatable, Sendable {
    case status(json: Bool)
    case connections(listener: String?, json: Bool)
    case reap(id: UInt64)
    case reload

    /// Longest request line accepted; anything longer is refused unread.
    public static let maximumLength = 1024

    /// Parses one request line (without its newline). Never traps, whatever the bytes.
    public static func parse(_ bytes: some Collection<UInt8>) -> Result<ControlRequest, ControlRequestError> {
        guard bytes.count <= maximumLength else { return .failure(.init("request longer than \(maximumLength) bytes")) }
        guard let line = String(validating: bytes, as: UTF8.self) else {
            return .failure(.init("request is not UTF-8"))
        }
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
        guard let verb = words.first else { return .failure(.init("empty request")) }
        var rest = Array(words.dropFirst())
        let json = rest.contains("--json")
        rest.removeAll { $0 == "--json" }
        switch verb {
        case "status":
            guard rest.isEmpty else { return .failure(.init("status takes no arguments besides --json")) }
            return .success(.status(json: json))
        case "connections":
            if rest.isEmpty { return .success(.connections(listener: nil, json: json)) }
            guard rest.count == 2, rest[0] == "--listener" else {
                return .failure(.init("usage: connections [--listener NAME] [--json]"))
            }
            return .success(.connections(listener: rest[1], json: json))
        case "reap":
            guard rest.count == 1, let id = UInt64(rest[0]) else { return .failure(.init("usage: reap ID")) }
            return .success(.reap(id: id))
        case "reload":
            guard rest.isEmpty else { return .failure(.init("reload takes no arguments")) }
            return .success(.reload)
        default:
            let shown = verb.count > 40 ? String(verb.prefix(40)) + "..." : verb
            return .failure(.init("unknown command '\(shown)' (status, connections, reap, reload)"))
        }
    }
}

public struct ControlRequestError: Error, Equatable, Sendable {
    public let message: String
    init(_ message: String) { self.message = message }
}

/// The answer framing: a status line, `OK` or `ERR message`, then the body.
public enum ControlResponse {
    public static func ok(_ body: String) -> [UInt8] { Array(("OK\n" + body).utf8) }
    public static func error(_ message: String) -> [UInt8] { Array("ERR \(message)\n".utf8) }
}
