internal import Synchronization

/// The kinds of record that get a fixed journal `MESSAGE_ID`, so
/// `journalctl MESSAGE_ID=...` finds every one of them.
public enum LogEvent: String, Sendable, CaseIterable {
    case reap = "94688cff9b8b47d497d493197145cc91"
    case start = "6adafd36a61a4fff8a706848ac845ba8"
    case reload = "4eb1b04a214141b8b449a78cb8e495c8"
    case reloadFailed = "b6f29b81ea0942b1bbd345dc89a68337"
    case stop = "120856b38b964471b80963dc98c5fbae"
    case acceptPaused = "cfb90438b59d447481a3511586e48661"

    public var messageID: String { rawValue }
}

/// One log record: a fixed sentence plus structured fields (swift-log's shape),
/// with the call site for journald's CODE_FILE/CODE_LINE.
public struct LogRecord: Sendable {
    public var level: LogLevel
    public var message: String
    /// Journal-style field names (`REAPERD_REASON`), upper case.
    public var fields: [(name: String, value: String)]
    public var event: LogEvent?
    public var file: String
    public var line: Int

    /// The journal priority: syslog numbers, with `err` the most severe reaperd uses.
    public var priority: Int {
        switch level {
        case .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .err: 3
        }
    }
}

/// Where records go: the console, the journal, or a test's capture.
public protocol LogSink: AnyObject {
    func write(_ record: LogRecord)
}

/// Filters by level and hands records to a sink. Every worker thread logs
/// through the one logger: the level is an atomic (a reload sets it while
/// workers read it), and a sink writes each record in one call, so records
/// from two threads never interleave (one write(2) of a line to stderr, one
/// sd_journal_sendv).
public final class Logger: @unchecked Sendable {
    // Invariant: `sink` is never replaced, and every sink is safe to call from
    // any thread (ConsoleSink, JournalSink; a test's capture is written by one).
    public let sink: any LogSink
    private let severity: Atomic<Int>

    public var level: LogLevel {
        get { LogLevel.allCases[severity.load(ordering: .relaxed)] }
        set { severity.store(LogLevel.allCases.firstIndex(of: newValue) ?? 0, ordering: .relaxed) }
    }

    public init(level: LogLevel, sink: any LogSink) {
        severity = Atomic(LogLevel.allCases.firstIndex(of: level) ?? 0)
        self.sink = sink
    }

    public func isEnabled(_ level: LogLevel) -> Bool { level >= self.level }

    public func log(
        _ level: LogLevel, _ message: String, _ fields: [(name: String, value: String)] = [],
        event: LogEvent? = nil, file: String = #fileID, line: Int = #line
    ) {
        guard isEnabled(level) else { return }
        sink.write(LogRecord(level: level, message: message, fields: fields, event: event, file: file, line: line))
    }

    public func debug(
        _ message: String, _ fields: [(name: String, value: String)] = [], file: String = #fileID, line: Int = #line
    ) {
        log(.debug, message, fields, file: file, line: line)
    }

    public func info(
        _ message: String, _ fields: [(name: String, value: String)] = [], event: LogEvent? = nil,
        file: String = #fileID, line: Int = #line
    ) {
        log(.info, message, fields, event: event, file: file, line: line)
    }

    public func notice(
        _ message: String, _ fields: [(name: String, value: String)] = [], event: LogEvent? = nil,
        file: String = #fileID, line: Int = #line
    ) {
        log(.notice, message, fields, event: event, file: file, line: line)
    }

    public func warning(
        _ message: String, _ fields: [(name: String, value: String)] = [], event: LogEvent? = nil,
        file: String = #fileID, line: Int = #line
    ) {
        log(.warning, message, fields, event: event, file: file, line: line)
    }

    public func error(
        _ message: String, _ fields: [(name: String, value: String)] = [], event: LogEvent? = nil,
        file: String = #fileID, line: Int = #line
    ) {
        log(.err, message, fields, event: event, file: file, line: line)
    }
}
