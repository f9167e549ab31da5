internal import CLinuxShim
internal import Glibc

/// How many CPUs this process can keep busy: `workers = auto`.
enum UsableCPUs {
    /// The affinity mask's CPUs (what `taskset` and `CPUAffinity=` allow),
    /// capped by the tightest CPU quota on the way from this process's cgroup
    /// to the root (`CPUQuota=` becomes `cpu.max`): a 150 % quota is two
    /// loops, rounded up, since a loop may idle. At least one.
    static func count() -> Int {
        let affinity = Int(cls_usable_cpus())
        var cpus = affinity > 0 ? affinity : 1
        if let quota = quota() { cpus = min(cpus, quota) }
        return max(1, cpus)
    }

    /// ceil(quota / period) of the tightest `cpu.max` above this process, or nil.
    static func quota() -> Int? {
        guard let mount = Cgroups.mountPoint(), let path = ownCgroup() else { return nil }
        var tightest: Int?
        var directory = path
        while true {
            if let limit = readQuota(mount + (directory == "/" ? "" : directory) + "/cpu.max") {
                tightest = min(tightest ?? limit, limit)
            }
            guard directory != "/", let slash = directory.lastIndex(of: "/") else { break }
            directory = slash == directory.startIndex ? "/" : String(directory[..<slash])
        }
        return tightest
    }

    /// `0::/system.slice/reaperd.service` from /proc/self/cgroup (the v2 line).
    private static func ownCgroup() -> String? {
        guard let bytes = try? Files.read("/proc/self/cgroup", limit: 64 << 10) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("0::") {
            return String(line.dropFirst(3))
        }
        return nil
    }

    /// `cpu.max` is "max 100000" (no quota) or "QUOTA PERIOD" in microseconds.
    static func parseQuota(_ text: String) -> Int? {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count == 2, let quota = Int(fields[0]), let period = Int(fields[1]), quota > 0, period > 0 else {
            return nil
        }
        return (quota + period - 1) / period
    }

    private static func readQuota(_ file: String) -> Int? {
        guard let bytes = try? Files.read(file, limit: 256) else { return nil }
        return parseQuota(String(decoding: bytes, as: UTF8.self))
    }
}

extension WorkerCount {
    /// The number of loops this process runs here.
    public func resolve() -> Int {
        switch self {
        case .auto: UsableCPUs.count()
        case .count(let n): n
        }
    }
}
