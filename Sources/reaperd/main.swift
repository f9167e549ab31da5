import Glibc
import ReaperCore

/// Loads the configuration the command line names: the given file, the default
/// file when it exists, or the embedded default.
func loadConfiguration(_ commandLine: DaemonCommandLine) throws(ConfigError) -> (Configuration, String?) {
    if let path = commandLine.configPath { return (try ConfigFile.load(path: path), path) }
    if Files.exists(ConfigFile.defaultPath) {
        return (try ConfigFile.load(path: ConfigFile.defaultPath), ConfigFile.defaultPath)
    }
    return (Configuration.embeddedDefault, nil)
}

func makeLogger(_ daemon: DaemonSettings) -> Logger {
    let journal: Bool
    switch daemon.logTarget {
    case .journal: journal = true
    case .console: journal = false
    case .auto: journal = JournalSink.stderrIsJournal
    }
    return Logger(level: daemon.logLevel, sink: journal ? JournalSink() : ConsoleSink())
}

let commandLine: DaemonCommandLine
do {
    commandLine = try DaemonCommandLine.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    Files.writeAll(2, Array("reaperd: \(error)\n\(DaemonCommandLine.usage)\n".utf8))
    exit(ExitCode.usage)
}

switch commandLine.action {
case .version:
    print(DaemonCommandLine.version)
    exit(ExitCode.ok)
case .help:
    print(DaemonCommandLine.help, terminator: "")
    exit(ExitCode.ok)
case .checkConfig, .run:
    break
}

// One sender for every notify message, the descriptor store's included (ordered, never blocking).
let notifySender = NotifySender.fromEnvironment()
let notifier: any ServiceNotifier =
    SystemdNotifier.isSupervised ? SystemdNotifier(sender: notifySender) : SilentNotifier()

/// Exits after the notify messages still queued (ERRNO=, STOPPING=1) went out,
/// waiting at most a second for a service manager that reads nothing.
@MainActor func exitNotified(_ code: Int32) -> Never {
    notifier.flush(within: .seconds(1))
    exit(code)
}

var configuration: Configuration
let configPath: String?
do {
    (configuration, configPath) = try loadConfiguration(commandLine)
} catch {
    let lines = error.diagnostics.map(\.description)
    Files.writeAll(2, Array((lines.joined(separator: "\n") + "\n").utf8))
    notifier.failed(errno: 22, status: "configuration refused: \(lines.first ?? "")")
    exitNotified(ExitCode.config)
}
if configPath == nil {
    // The embedded default names no control socket path: find a safe one.
    do {
        configuration.daemon.controlSocket = try ControlSocketPath.forEmbeddedDefault()
    } catch {
        Files.writeAll(2, Array("reaperd: \(error)\n".utf8))
        notifier.failed(errno: EPERM, status: "start-up failed: \(error)")
        exitNotified(ExitCode.failure)
    }
}

if commandLine.action == .checkConfig {
    print(configuration.effectiveINI(), terminator: "")
    for line in configuration.advice() { Files.writeAll(2, Array((line + "\n").utf8)) }
    exit(ExitCode.ok)
}

let logger = makeLogger(configuration.daemon)
if configPath == nil {
    logger.notice(
        "no configuration file at \(ConfigFile.defaultPath): running the embedded default (echo on 127.0.0.1:7070)")
}
ControlSocketPath.prepareDirectory(for: configuration.daemon.controlSocket)

do {
    let daemon = try Daemon(
        configuration: configuration, configPath: configPath, logger: logger, notifier: notifier,
        activated: SocketActivation.receive(),
        store: notifySender.map { SystemdDescriptorStore(sender: $0) },
        storeCapacity: SystemdDescriptorStore.capacity(for: configuration.daemon.fdStore))
    do {
        try daemon.start()
    } catch {
        logger.error("start-up failed: \(error.message)", [("REAPERD_ERROR", error.message)])
        // The journal may be the sink and journald absent (log_target = journal
        // without it): a fatal error must still be seen where reaperd was started.
        if !JournalSink.stderrIsJournal && logger.sink is JournalSink {
            Files.writeAll(2, Array("reaperd: start-up failed: \(error.message)\n".utf8))
        }
        notifier.failed(errno: error.errno, status: "start-up failed: \(error.message)")
        exitNotified(error.isConfiguration ? ExitCode.config : ExitCode.failure)
    }
    try daemon.run()
    logger.info("reaperd stopped")
    exitNotified(ExitCode.ok)
} catch {
    Files.writeAll(2, Array("reaperd: \(error)\n".utf8))
    exitNotified(ExitCode.failure)
}
