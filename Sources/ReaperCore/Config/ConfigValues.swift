/// Why one value was refused. The builder prefixes the key and adds the line, so the
/// message reads `keepalive_count: 200 is out of range (1 ... 127)`.
struct ConfigValueError: Error {
    var message: String

    init(_ message: String) {
        self.message = message
    }
}

/// Parsers for the value types of SPEC §3. Integers are plain decimal; durations are a
/// whole number with `ms`, `s`, `min` or `h` (bare = seconds). Numbers too large for
/// `Int64` saturate, so they fail the range check instead of trapping.
enum ConfigValues {
    static func boolean(_ text: String) throws(ConfigValueError) -> Bool {
        switch text {
        case "yes", "true", "on", "1": return true
        case "no", "false", "off", "0": return false
        default: throw ConfigValueError("\(text) is not a boolean (yes/no, true/false, on/off, 1/0)")
        }
    }

    /// A decimal integer within `range`. A leading `-` is read so that `-1` is reported as out of range.
    static func integer(_ text: String, in range: ClosedRange<Int>) throws(ConfigValueError) -> Int {
        var digits = Substring(text)
        let negative = digits.first == "-"
        if negative { digits = digits.dropFirst() }
        guard !digits.isEmpty, digits.utf8.allSatisfy(isDigit) else {
            throw ConfigValueError("\(text) is not a whole number")
        }
        var value: Int64 = 0
        for byte in digits.utf8 {
            value = ConfigArithmetic.add(ConfigArithmetic.multiply(value, 10), Int64(byte - UInt8(ascii: "0")))
        }
        if negative { value = -value }
        guard value >= Int64(range.lowerBound), value <= Int64(range.upperBound) else {
            throw ConfigValueError("\(text) is out of range (\(range.lowerBound) ... \(range.upperBound))")
        }
        return Int(value)
    }

    /// A duration in milliseconds, saturating at `Int64.max`.
    static func milliseconds(_ text: String) throws(ConfigValueError) -> Int64 {
        let bytes = Array(text.utf8)
        var index = 0
        var value: Int64 = 0
        while index < bytes.count, isDigit(bytes[index]) {
            value = ConfigArithmetic.add(
                ConfigArithmetic.multiply(value, 10), Int64(bytes[index] - UInt8(ascii: "0")))
            index += 1
        }
        let invalid = ConfigValueError(
            "\(text) is not a duration (a whole number with ms, s, min or h; a bare number is seconds)")
        guard index > 0 else { throw invalid }
        while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") {
            index += 1
        }
        let scale: Int64
        switch String(decoding: bytes[index...], as: UTF8.self) {
        case "", "s": scale = 1000
        case "ms": scale = 1
        case "min": scale = 60_000
        case "h": scale = 3_600_000
        case "m":
            throw ConfigValueError("\(text): the unit m is ambiguous; write min for minutes or ms for milliseconds")
        default: throw invalid
        }
        return ConfigArithmetic.multiply(value, scale)
    }

    /// A duration whose milliseconds lie in `range`.
    static func duration(_ text: String, in range: ClosedRange<Int64>) throws(ConfigValueError) -> Duration {
        let value = try milliseconds(text)
        guard range.contains(value) else {
            throw ConfigValueError("\(text) is out of range (\(rangeText(range)))")
        }
        return .milliseconds(value)
    }

    /// A duration that must be whole seconds (the kernel's keepalive options count seconds).
    static func wholeSeconds(_ text: String, in range: ClosedRange<Int>) throws(ConfigValueError) -> Int {
        let value = try milliseconds(text)
        let bounds = Int64(range.lowerBound) * 1000...Int64(range.upperBound) * 1000
        guard bounds.contains(value) else {
            throw ConfigValueError("\(text) is out of range (\(rangeText(bounds)))")
        }
        guard value % 1000 == 0 else {
            throw ConfigValueError("\(text) must be whole seconds")
        }
        return Int(value / 1000)
    }

    /// An absolute path that fits a Unix socket address.
    static func socketPath(_ text: String) throws(ConfigValueError) -> String {
        guard text.hasPrefix("/") else {
            throw ConfigValueError("\(text) is not an absolute path")
        }
        guard text.utf8.count <= Endpoint.maxUnixPathBytes else {
            throw ConfigValueError("path is longer than \(Endpoint.maxUnixPathBytes) bytes")
        }
        return text
    }

    static func endpoint(_ text: String) throws(ConfigValueError) -> Endpoint {
        switch Endpoint.parse(text) {
        case .success(let endpoint): return endpoint
        case .failure(let error): throw ConfigValueError(error.message)
        }
    }

    /// One of an enumeration's raw values, e.g. a log level.
    static func choice<Choice: RawRepresentable & CaseIterable>(
        _ text: String, of _: Choice.Type
    ) throws(ConfigValueError) -> Choice where Choice.RawValue == String {
        guard let value = Choice(rawValue: text) else {
            let allowed = Choice.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigValueError("\(text) is not one of \(allowed)")
        }
        return value
    }

    private static func rangeText(_ range: ClosedRange<Int64>) -> String {
        "\(ConfigDuration.text(milliseconds: range.lowerBound)) ... \(ConfigDuration.text(milliseconds: range.upperBound))"
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }
}

/// Canonical duration text: whole hours as `Nh`, else whole minutes `Nmin`, else whole
/// seconds `Ns`, else `Nms`; zero as `0`.
enum ConfigDuration {
    static func text(milliseconds: Int64) -> String {
        switch milliseconds {
        case 0: "0"
        case let ms where ms % 3_600_000 == 0: "\(ms / 3_600_000)h"
        case let ms where ms % 60_000 == 0: "\(ms / 60_000)min"
        case let ms where ms % 1000 == 0: "\(ms / 1000)s"
        case let ms: "\(ms)ms"
        }
    }

    static func text(_ duration: Duration) -> String {
        text(milliseconds: milliseconds(of: duration))
    }

    /// Whole milliseconds in `duration`, truncated, saturating at the `Int64` limits.
    static func milliseconds(of duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return ConfigArithmetic.add(
            ConfigArithmetic.multiply(seconds, 1000), attoseconds / 1_000_000_000_000_000)
    }
}

/// Saturating arithmetic, so hostile numbers in a file cannot trap the parser.
enum ConfigArithmetic {
    static func multiply(_ lhs: Int64, _ rhs: Int64) -> Int64 {
        let (result, overflow) = lhs.multipliedReportingOverflow(by: rhs)
        guard overflow else { return result }
        return (lhs < 0) == (rhs < 0) ? .max : .min
    }

    static func add(_ lhs: Int64, _ rhs: Int64) -> Int64 {
        let (result, overflow) = lhs.addingReportingOverflow(rhs)
        guard overflow else { return result }
        return rhs > 0 ? .max : .min
    }
}
