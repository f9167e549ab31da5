/// The `[daemon]` section: settings of the process as a whole.
public struct DaemonSettings: Hashable, Sendable {
    /// Absolute path of the control socket `reaperctl` talks to.
    public var controlSocket: String
    /// Where `GET /metrics` is served; nil means off. Always a TCP endpoint with a port.
    public var metrics: Endpoint?
    /// The least severe entry that is logged.
    public var logLevel: LogLevel
    /// Journal, console, or journal-when-under-systemd.
    public var logTarget: LogTarget
    /// Period of the `TCP_INFO` sweep, 10 ms ... 1 h.
    public var pollInterval: Duration
    /// On `SIGTERM`, how long relays may drain after accepting stops, 0 ... 1 h.
    public var shutdownGrace: Duration
    /// Connection limit across all listeners, 1 ... 10 000 000.
    public var maxConnections: Int
    /// Hand connections to systemd's file descriptor store.
    public var fdStore: FDStoreMode
    /// A connection goes to the store once it has lived this long, 0 ... 1 h
    /// (0: at once). Short connections then never cost PID 1 anything: systemd
    /// 252 compares each stored descriptor with every one it holds.
    public var fdStoreMinAge: Duration
    /// Event loops (threads) that accept and relay: a number, or one per CPU
    /// this process may use (`auto`, `WorkerCount.resolve`).
    public var workers: WorkerCount

    /// The control socket path used when the file does not set one.
    public static let defaultControlSocket = "/run/reaperd/control.sock"

    /// Every key at its documented default.
    public static let defaults = DaemonSettings()

    /// Settings with every parameter at its documented default unless given.
    public init(
        controlSocket: String = DaemonSettings.defaultControlSocket,
        metrics: Endpoint? = nil,
        logLevel: LogLevel = .info,
        logTarget: LogTarget = .auto,
        pollInterval: Duration = .seconds(1),
        shutdownGrace: Duration = .seconds(10),
        maxConnections: Int = 100_000,
        fdStore: FDStoreMode = .auto,
        fdStoreMinAge: Duration = .seconds(2),
        workers: WorkerCount = .auto
    ) {
        self.controlSocket = controlSocket
        self.metrics = metrics
        self.logLevel = logLevel
        self.logTarget = logTarget
        self.pollInterval = pollInterval
        self.shutdownGrace = shutdownGrace
        self.maxConnections = maxConnections
        self.fdStore = fdStore
        self.fdStoreMinAge = fdStoreMinAge
        self.workers = workers
    }
}
