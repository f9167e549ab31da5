/// The process's effective capabilities (CapEff in /proc/self/status), to
/// name what is missing before the kernel answers a bare EPERM.
enum Capabilities {
    enum Capability: Int, CaseIterable, CustomStringConvertible {
        case dacReadSearch = 2
        case netAdmin = 12
        case sysPtrace = 19
        case perfmon = 38
        case bpf = 39

        var description: String {
            switch self {
            case .dacReadSearch: "CAP_DAC_READ_SEARCH"
            case .netAdmin: "CAP_NET_ADMIN"
            case .sysPtrace: "CAP_SYS_PTRACE"
            case .perfmon: "CAP_PERFMON"
            case .bpf: "CAP_BPF"
            }
        }
    }

    /// Those of `wanted` the process does not hold; all of them when the
    /// status cannot be read.
    static func missing(_ wanted: [Capability]) -> [Capability] {
        guard let effective = effective() else { return wanted }
        return wanted.filter { effective & (1 << UInt64($0.rawValue)) == 0 }
    }

    private static func effective() -> UInt64? {
        guard let bytes = try? Files.read("/proc/self/status", limit: 1 << 20) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("CapEff:") {
            return UInt64(line.dropFirst("CapEff:".count).drop { $0 == " " || $0 == "\t" }, radix: 16)
        }
        return nil
    }
}
