/// A minimal JSON builder for control-socket answers: objects, arrays,
/// strings, numbers, booleans. Keys keep the order they are written in.
struct JSONWriter {
    private(set) var text = ""
    private var needsComma = [false]

    mutating func beginObject(_ key: String? = nil) { open(key, "{") }
    mutating func endObject() { close("}") }
    mutating func beginArray(_ key: String? = nil) { open(key, "[") }
    mutating func endArray() { close("]") }

    mutating func field(_ key: String, _ value: String) {
        prefix(key)
        text += Self.quote(value)
    }

    /// A string element of the array being written.
    mutating func element(_ value: String) {
        prefix(nil)
        text += Self.quote(value)
    }

    mutating func field(_ key: String, _ value: some BinaryInteger) {
        prefix(key)
        text += "\(value)"
    }

    mutating func field(_ key: String, _ value: Double) {
        prefix(key)
        text += value.isFinite ? "\(value)" : "null"
    }

    mutating func field(_ key: String, _ value: Bool) {
        prefix(key)
        text += value ? "true" : "false"
    }

    private mutating func open(_ key: String?, _ bracket: String) {
        prefix(key)
        text += bracket
        needsComma.append(false)
    }

    private mutating func close(_ bracket: String) {
        needsComma.removeLast()
        text += bracket
    }

    private mutating func prefix(_ key: String?) {
        if needsComma[needsComma.count - 1] { text += "," }
        needsComma[needsComma.count - 1] = true
        if let key { text += Self.quote(key) + ":" }
    }

    static func quote(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
