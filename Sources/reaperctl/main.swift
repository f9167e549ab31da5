import Glibc
import ReaperCore

let usage = """
    usage: reaperctl [--socket PATH] status [--json]
           reaperctl [--socket PATH] connections [--listener NAME] [--json]
           reaperctl [--socket PATH] reap ID
           reaperctl [--socket PATH] reload
    """

func exitUsage(_ message: String) -> Never {
    Files.writeAll(2, Array("reaperctl: \(message)\n\(usage)\n".utf8))
    exit(ExitCode.usage)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var socketPath: String?
if let index = arguments.firstIndex(of: "--socket") {
    guard index + 1 < arguments.count else { exitUsage("--socket needs a path") }
    socketPath = arguments[index + 1]
    arguments.removeSubrange(index...index + 1)
}
if arguments.contains("--help") || arguments.contains("-h") {
    print(usage)
    exit(ExitCode.ok)
}
if arguments.contains("--version") {
    print("reaperctl" + DaemonCommandLine.version.dropFirst("reaperd".count))
    exit(ExitCode.ok)
}
guard let verb = arguments.first else { exitUsage("no command given") }
guard ["status", "connections", "reap", "reload"].contains(verb) else { exitUsage("unknown command '\(verb)'") }

// Check locally what can be checked, so a typo gets a usage line and exit 64.
let line = arguments.joined(separator: " ")
if case .failure(let error) = ControlRequest.parse(Array(line.utf8)) { exitUsage(error.message) }

let path = socketPath ?? ControlClient.defaultSocketPath()
do {
    try ControlSocketPath.checkTrusted(path)
} catch {
    Files.writeAll(2, Array("reaperctl: \(error)\n".utf8))
    exit(ExitCode.noPermission)
}
do {
    let answer = try ControlClient.request(line, socketPath: path)
    if answer.ok {
        print(answer.text, terminator: "")
        exit(ExitCode.ok)
    }
    Files.writeAll(2, Array("reaperctl: \(answer.text)".utf8))
    if !answer.text.hasSuffix("\n") { Files.writeAll(2, [0x0A]) }
    exit(ExitCode.failure)
} catch {
    Files.writeAll(2, Array("reaperctl: cannot reach reaperd: \(error)\n".utf8))
    exit(ExitCode.unavailable)
}
