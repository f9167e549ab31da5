// libFuzzer target for the INI parser and validator. Built and run by Tests/fuzz/build.sh
// and `make fuzz`; not part of the SwiftPM package.

import ReaperCore

/// Feeds one input to `Configuration.parse(utf8:file:)`, as `reaperd --config` reads a file.
///
/// Any bytes may be refused, never with a trap, and a refusal names at least one problem at
/// a line the file has. An accepted configuration must keep the promise of
/// `reaperd --check-config` (SPEC §2): its `effectiveINI()` parses back to an equal
/// configuration, and printing that again gives the same bytes. A broken promise traps, so
/// libFuzzer keeps the input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfiguration(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let file = "fuzz.conf"
    let configuration: Configuration
    do throws(ConfigError) {
        configuration = try Configuration.parse(utf8: bytes, file: file)
    } catch {
        checkRefusal(error, file: file, lineCount: bytes.count { $0 == UInt8(ascii: "\n") } + 1)
        return 0
    }
    checkRoundTrip(configuration, file: file)
    return 0
}

/// A refusal lists every problem as `FILE:LINE: message` (or `FILE: message`), each at a line
/// of the file, sorted by line with whole-file problems last.
private func checkRefusal(_ error: ConfigError, file: String, lineCount: Int) {
    precondition(!error.diagnostics.isEmpty, "configuration refused without a diagnostic")
    for diagnostic in error.diagnostics {
        precondition(diagnostic.description.hasPrefix("\(file):"), "diagnostic not of \(file): \(diagnostic)")
        if let line = diagnostic.line {
            precondition((1...lineCount).contains(line), "diagnostic at line \(line) of a \(lineCount)-line file")
        }
    }
    let lines = error.diagnostics.map { $0.line ?? Int.max }
    precondition(lines == lines.sorted(), "diagnostics not sorted by line:\n\(error)")
}

/// `effectiveINI()` parses back to the same configuration and prints the same bytes again.
private func checkRoundTrip(_ configuration: Configuration, file: String) {
    precondition(!configuration.listeners.isEmpty, "configuration accepted without a listener")
    let printed = configuration.effectiveINI()
    let reparsed: Configuration
    do throws(ConfigError) {
        reparsed = try Configuration.parse(utf8: Array(printed.utf8), file: file)
    } catch {
        fatalError("the effective configuration does not parse back:\n\(error)\n--- effective ---\n\(printed)")
    }
    let reprinted = reparsed.effectiveINI()
    guard reparsed == configuration else {
        fatalError(
            "the effective configuration parses back to a different one\n--- effective ---\n\(printed)"
                + "--- parsed back ---\n\(reprinted)")
    }
    guard Array(reprinted.utf8) == Array(printed.utf8) else {
        fatalError(
            "the effective configuration prints differently once parsed back\n--- effective ---\n\(printed)"
                + "--- parsed back ---\n\(reprinted)")
    }
}
