/// One `key = value` line inside a section.
struct ConfigEntry {
    var key: String
    var value: String
    var line: Int
}

/// The entries of one section, grouped before any value is interpreted, so that
/// `[defaults]` can come after the listeners that inherit from it.
struct ConfigSection {
    enum Kind: Hashable {
        case daemon
        case defaults
        case listener(String)
        /// `[service:NAME]`: adopt mode, beside a service instead of in front.
        case service(String)
    }

    var kind: Kind
    var line: Int
    var entries: [ConfigEntry] = []
    /// A duplicate section, or a listener with an invalid name: its values are still
    /// checked (so one pass reports everything) but it does not enter the configuration.
    var isDiscarded = false

    /// Groups lexed lines by section. Reports keys outside any section, unknown and
    /// duplicate sections, invalid listener names and duplicate keys; the entries of an
    /// unknown section are skipped, since their keys cannot be judged.
    static func group(_ lines: [INILine], diagnostics: inout ConfigDiagnostics) -> [ConfigSection] {
        var sections: [ConfigSection] = []
        var firstLine: [Kind: Int] = [:]
        // Keys of the current section with their lines: a hash lookup per key, so
        // a file of many keys costs linear time, not quadratic.
        var keyLines: [String: Int] = [:]
        var inUnknownSection = false
        for line in lines {
            switch line {
            case .header(let name, let number):
                keyLines = [:]
                guard let (kind, nameIsValid) = kind(of: name, line: number, diagnostics: &diagnostics) else {
                    inUnknownSection = true
                    continue
                }
                inUnknownSection = false
                var section = ConfigSection(kind: kind, line: number, isDiscarded: !nameIsValid)
                if let first = firstLine[kind] {
                    diagnostics.add(number, "duplicate section [\(name)] (first at line \(first))")
                    section.isDiscarded = true
                } else {
                    firstLine[kind] = number
                }
                sections.append(section)
            case .invalidHeader:
                inUnknownSection = true
            case .entry(let key, let value, let number):
                guard !inUnknownSection else { continue }
                guard let current = sections.indices.last else {
                    diagnostics.add(
                        number, "\(key) is outside any section; put it under [daemon], [defaults] or [listener:NAME]")
                    continue
                }
                if let first = keyLines[key] {
                    diagnostics.add(number, "duplicate key \(key) (first set at line \(first))")
                    continue
                }
                keyLines[key] = number
                sections[current].entries.append(ConfigEntry(key: key, value: value, line: number))
            }
        }
        return sections
    }

    /// The kind a header names and whether its listener name is valid, or nil for an unknown section.
    private static func kind(
        of name: String, line: Int, diagnostics: inout ConfigDiagnostics
    ) -> (Kind, Bool)? {
        switch name {
        case "daemon": return (.daemon, true)
        case "defaults": return (.defaults, true)
        case "listener":
            diagnostics.add(line, "[listener] needs a name: [listener:NAME]")
            return nil
        case "service":
            diagnostics.add(line, "[service] needs a name: [service:NAME]")
            return nil
        default: break
        }
        // Named sections: listeners and services share the name rules.
        for (word, make) in [("listener", Kind.listener), ("service", Kind.service)] where name.hasPrefix(word + ":") {
            let given = String(name.dropFirst(word.count + 1))
            guard ListenerSettings.isValidName(given) else {
                diagnostics.add(
                    line,
                    "invalid \(word) name \"\(given)\": use 1 to \(ListenerSettings.maxNameLength) "
                        + "characters from A-Z a-z 0-9 _ -")
                return (make(given), false)
            }
            return (make(given), true)
        }
        var message = "unknown section [\(name)]; expected [daemon], [defaults], [listener:NAME] or [service:NAME]"
        if let suggestion = suggestSection(for: name) {
            message += "; did you mean [\(suggestion)]?"
        }
        diagnostics.add(line, message)
        return nil
    }

    private static func suggestSection(for name: String) -> String? {
        if let colon = name.firstIndex(of: ":") {
            let prefix = String(name[..<colon])
            let rest = name[name.index(after: colon)...]
            if ConfigKeySuggestion.editDistance(prefix, "service") <= 2 { return "service:\(rest)" }
            return ConfigKeySuggestion.editDistance(prefix, "listener") <= 2 ? "listener:\(rest)" : nil
        }
        return ConfigKeySuggestion.closest(to: name, among: ["daemon", "defaults"])
    }
}
