import ReaperCore
import Testing

/// Helpers shared by the configuration tests.
enum ConfigFixture {
    /// A listener that satisfies "at least one listener", for files that test other sections.
    static let echoListener = """
        [listener:t]
        listen = 127.0.0.1:0
        mode = echo

        """

    /// Parses `text`, recording a test issue (and returning nil) if it is refused.
    static func parse(
        _ text: String, file: String = "test.conf", sourceLocation: SourceLocation = #_sourceLocation
    ) -> Configuration? {
        do {
            return try Configuration.parse(text, file: file)
        } catch {
            Issue.record("expected \(file) to parse, got:\n\(error)", sourceLocation: sourceLocation)
            return nil
        }
    }

    /// Parses `text` expecting refusal; returns the diagnostics (empty, with an issue, if it parsed).
    static func diagnostics(
        _ text: String, file: String = "bad.conf", sourceLocation: SourceLocation = #_sourceLocation
    ) -> [ConfigDiagnostic] {
        do {
            let configuration = try Configuration.parse(text, file: file)
            Issue.record("expected an error, parsed: \(configuration)", sourceLocation: sourceLocation)
            return []
        } catch {
            return error.diagnostics
        }
    }

    /// The connection settings of listener `t` in a file made of `body` plus an echo listener
    /// whose own section holds `listenerBody`.
    static func connection(defaults body: String = "", listener listenerBody: String = "") -> ConnectionSettings? {
        let text = "[defaults]\n\(body)\n" + echoListener + listenerBody
        return parse(text)?.listener(named: "t")?.connection
    }

    /// The single diagnostic for `text`, recording an issue if there is not exactly one.
    static func onlyDiagnostic(
        _ text: String, sourceLocation: SourceLocation = #_sourceLocation
    ) -> ConfigDiagnostic? {
        let found = diagnostics(text, sourceLocation: sourceLocation)
        #expect(found.count == 1, "expected one diagnostic, got \(found)", sourceLocation: sourceLocation)
        return found.first
    }
}
