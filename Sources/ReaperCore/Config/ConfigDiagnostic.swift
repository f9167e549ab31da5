/// One problem found in a configuration file, printed as `FILE:LINE: message`.
public struct ConfigDiagnostic: Hashable, Sendable, CustomStringConvertible {
    /// The file name as given to the parser.
    public var file: String
    /// 1-based line, or nil for a problem of the whole file (no listener at all).
    public var line: Int?
    /// What is wrong, naming the key and the allowed values.
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    /// `FILE:LINE: message`, or `FILE: message` when there is no line.
    public var description: String {
        if let line {
            "\(file):\(line): \(message)"
        } else {
            "\(file): \(message)"
        }
    }
}

/// Why a configuration was refused: every problem found in one pass, sorted by line
/// (problems of the whole file last).
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [ConfigDiagnostic]

    public init(diagnostics: [ConfigDiagnostic]) {
        self.diagnostics = diagnostics
    }

    /// One `FILE:LINE: message` per line, ready for stderr or a log entry.
    public var description: String {
        diagnostics.map(\.description).joined(separator: "\n")
    }
}

/// Collects diagnostics for one file while it is parsed.
struct ConfigDiagnostics {
    let file: String
    private(set) var items: [ConfigDiagnostic] = []

    init(file: String) {
        self.file = file
    }

    var isEmpty: Bool { items.isEmpty }

    mutating func add(_ line: Int?, _ message: String) {
        items.append(ConfigDiagnostic(file: file, line: line, message: message))
    }

    /// Sorted by line, keeping the order found within a line; file-wide problems last.
    var sorted: [ConfigDiagnostic] {
        items.enumerated()
            .sorted { ($0.element.line ?? Int.max, $0.offset) < ($1.element.line ?? Int.max, $1.offset) }
            .map(\.element)
    }
}
