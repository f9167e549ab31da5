/// The metrics port's HTTP: just enough to answer `GET /metrics`, and to turn
/// anything else away with the right status.
public enum MetricsRequest {
    public static let maximumLength = 8192

    public enum Verdict: Equatable, Sendable {
        case metrics(headOnly: Bool)
        case error(status: Int, reason: String)
        case needMore
    }

    /// Judges the bytes received so far. `complete` is true at EOF or when the
    /// size limit was reached.
    public static func judge(_ bytes: [UInt8], complete: Bool) -> Verdict {
        guard let end = headerEnd(bytes) else {
            if bytes.count > maximumLength { return .error(status: 431, reason: "Request Header Fields Too Large") }
            return complete ? .error(status: 400, reason: "Bad Request") : .needMore
        }
        guard let head = String(validating: bytes[..<end], as: UTF8.self),
            let requestLine = head.split(separator: "\r\n", omittingEmptySubsequences: false).first
                ?? head.split(separator: "\n").first
        else { return .error(status: 400, reason: "Bad Request") }
        let parts = requestLine.split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else { return .error(status: 400, reason: "Bad Request") }
        let path = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard path == "/metrics" else { return .error(status: 404, reason: "Not Found") }
        switch parts[0] {
        case "GET": return .metrics(headOnly: false)
        case "HEAD": return .metrics(headOnly: true)
        default: return .error(status: 405, reason: "Method Not Allowed")
        }
    }

    /// Index just past the blank line ending the header, accepting bare LF too.
    static func headerEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for index in 1..<bytes.count where bytes[index] == 0x0A {
            if bytes[index - 1] == 0x0A { return index + 1 }
            if index >= 3 && bytes[index - 1] == 0x0D && bytes[index - 2] == 0x0A && bytes[index - 3] == 0x0D {
                return index + 1
            }
        }
        return nil
    }

    public static func response(status: Int, reason: String, contentType: String, body: String, headOnly: Bool = false)
        -> [UInt8]
    {
        let bodyBytes = Array(body.utf8)
        let head =
            "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(contentType)\r\n"
            + "Content-Length: \(bodyBytes.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + (headOnly ? [] : bodyBytes)
    }
}
