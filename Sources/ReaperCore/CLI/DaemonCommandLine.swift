/// reaperd's command line (SPEC §2).
public struct DaemonCommandLine: Equatable, Sendable {
    public enum Action: Equatable, Sendable { case run, checkConfig, version, help }

    public var action = Action.run
    /// nil: the default path, or the embedded default when that file is absent.
    public var configPath: String?

    public static let version = "reaperd 0.1.0"
    public static let usage = "usage: reaperd [--config FILE] [--check-config] [--version] [--help]"
    public static let help = """
        \(usage)

        Keeps only living TCP connections in front of a service: relays (or echoes)
        clients with per-socket TCP keepalive and reaps the ones whose peers vanished.

          --config FILE    read FILE instead of \(ConfigFile.defaultPath)
          --check-config   validate, print the effective configuration, exit (78 on error)
          --version        print the version
          --help           print this help

        Without --config and with no \(ConfigFile.defaultPath), reaperd runs an echo
        listener on 127.0.0.1:7070. See reaperd(8) and reaperd.conf(5).

        """

    public struct UsageError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ arguments: [String]) throws(UsageError) -> DaemonCommandLine {
        var line = DaemonCommandLine()
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            switch argument {
            case "--config", "-c":
                guard index + 1 < arguments.count, !arguments[index + 1].isEmpty else {
                    throw UsageError(description: "\(argument) needs a file name")
                }
                line.configPath = arguments[index + 1]
                index += 1
            case "--check-config": line.action = .checkConfig
            case "--version", "-V": line.action = .version
            case "--help", "-h": line.action = .help
            default:
                if argument.hasPrefix("--config=") {
                    line.configPath = String(argument.dropFirst("--config=".count))
                } else {
                    throw UsageError(description: "unknown argument '\(argument)'")
                }
            }
            index += 1
        }
        return line
    }
}

/// sysexits(3) codes the CLIs use.
public enum ExitCode {
    public static let ok: Int32 = 0
    public static let failure: Int32 = 1
    public static let usage: Int32 = 64
    public static let unavailable: Int32 = 69
    /// EX_NOPERM: reaperctl refuses a control socket another user could have made.
    public static let noPermission: Int32 = 77
    public static let config: Int32 = 78
}
