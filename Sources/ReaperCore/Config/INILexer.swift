/// One meaningful line of an INI file, comments and blank lines removed.
enum INILine: Equatable {
    /// `[name]`, the name trimmed.
    case header(name: String, line: Int)
    /// `key = value`, both trimmed; the value may be empty (the builder reports it,
    /// knowing whether the key exists).
    case entry(key: String, value: String, line: Int)
    /// A line that starts with `[` but is not a valid header (already reported); the
    /// keys after it belong to no known section and are skipped.
    case invalidHeader(line: Int)
}

/// Splits INI text into headers and entries (SPEC §3 syntax).
///
/// Works on bytes: every delimiter is ASCII, and an ASCII byte never occurs inside a
/// multi-byte UTF-8 sequence, so slicing at them is safe. Rules:
/// - lines end in LF or CRLF; a UTF-8 byte order mark on line 1 is skipped;
/// - a line whose first non-blank character is `#` or `;` is a comment;
/// - a `#` or `;` preceded by a space or tab ends the line (trailing comment), so a
///   value can hold `#` or `;` only when not preceded by whitespace (`unix:/run/a#b`);
/// - NUL bytes, invalid UTF-8 and U+FFFD (what a decoder leaves of invalid UTF-8) are errors.
enum INILexer {
    static func lex(_ bytes: [UInt8], diagnostics: inout ConfigDiagnostics) -> [INILine] {
        var result: [INILine] = []
        let rawLines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        for (index, rawLine) in rawLines.enumerated() {
            let number = index + 1
            var line = rawLine[...]
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            if number == 1 && line.starts(with: byteOrderMark) { line = line.dropFirst(byteOrderMark.count) }
            guard !line.contains(0) else {
                diagnostics.add(number, "line contains a NUL byte")
                continue
            }
            guard String(validating: line, as: UTF8.self) != nil else {
                diagnostics.add(number, "line is not valid UTF-8")
                continue
            }
            guard !containsReplacementCharacter(line) else {
                diagnostics.add(number, "line contains U+FFFD: the file was probably not valid UTF-8")
                continue
            }
            if let parsed = lexLine(line, number: number, diagnostics: &diagnostics) {
                result.append(parsed)
            }
        }
        return result
    }

    private static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]
    private static let replacementCharacter: [UInt8] = [0xEF, 0xBF, 0xBD]

    private static func lexLine(
        _ line: ArraySlice<UInt8>, number: Int, diagnostics: inout ConfigDiagnostics
    ) -> INILine? {
        let trimmed = trim(line)
        guard let first = trimmed.first, first != UInt8(ascii: "#"), first != UInt8(ascii: ";") else {
            return nil
        }
        let content = trim(stripTrailingComment(trimmed))
        if content.first == UInt8(ascii: "[") {
            return lexHeader(content, number: number, diagnostics: &diagnostics)
        }
        guard let equals = content.firstIndex(of: UInt8(ascii: "=")) else {
            diagnostics.add(number, "expected [section] or key = value, found \(excerpt(content))")
            return nil
        }
        let key = trim(content[..<equals])
        let value = trim(content[(equals + 1)...])
        guard !key.isEmpty else {
            diagnostics.add(number, "missing key before =")
            return nil
        }
        return .entry(key: text(key), value: text(value), line: number)
    }

    private static func lexHeader(
        _ content: ArraySlice<UInt8>, number: Int, diagnostics: inout ConfigDiagnostics
    ) -> INILine? {
        guard let close = content.firstIndex(of: UInt8(ascii: "]")) else {
            diagnostics.add(number, "section header is missing its closing ]")
            return .invalidHeader(line: number)
        }
        guard close == content.index(before: content.endIndex) else {
            diagnostics.add(number, "unexpected text after ] in section header")
            return .invalidHeader(line: number)
        }
        let name = trim(content[(content.startIndex + 1)..<close])
        guard !name.isEmpty else {
            diagnostics.add(number, "empty section name []")
            return .invalidHeader(line: number)
        }
        return .header(name: text(name), line: number)
    }

    static func isBlank(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\r")
            || byte == 0x0B || byte == 0x0C
    }

    static func trim(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var slice = bytes
        while let first = slice.first, isBlank(first) { slice = slice.dropFirst() }
        while let last = slice.last, isBlank(last) { slice = slice.dropLast() }
        return slice
    }

    /// Cuts the line at the first `#` or `;` that follows a space or tab.
    private static func stripTrailingComment(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var previous: UInt8 = UInt8(ascii: "x")
        for index in bytes.indices {
            let byte = bytes[index]
            if (byte == UInt8(ascii: "#") || byte == UInt8(ascii: ";")) && isBlank(previous) {
                return bytes[..<index]
            }
            previous = byte
        }
        return bytes
    }

    private static func containsReplacementCharacter(_ bytes: ArraySlice<UInt8>) -> Bool {
        var index = bytes.startIndex
        while let found = bytes[index...].firstIndex(of: replacementCharacter[0]) {
            if bytes[found...].starts(with: replacementCharacter) { return true }
            index = found + 1
        }
        return false
    }

    private static func text(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes, as: UTF8.self)
    }

    /// The start of an offending line, short enough for a one-line message.
    private static func excerpt(_ bytes: ArraySlice<UInt8>) -> String {
        let all = text(bytes)
        return all.count > 40 ? String(all.prefix(40)) + "..." : all
    }
}
