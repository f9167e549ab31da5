/// `workers =` in `[daemon]`: how many event loops accept and relay.
public enum WorkerCount: Hashable, Sendable {
    /// One per CPU this process may use: its affinity mask, capped by the
    /// CPU quota (`cpu.max`) of its cgroup and every cgroup above it.
    case auto
    case count(Int)

    /// More loops than this would only contend for the same cores.
    public static let maximum = 256

    var text: String {
        switch self {
        case .auto: "auto"
        case .count(let n): "\(n)"
        }
    }
}
