import Foundation
import Testing

@testable import ReaperCore

/// The randomized differential test of the relay (issue: lossless relay). Each
/// seed makes one script: writes of random sizes (0 B to 16 MiB), slow and
/// pausing readers on either side, half-closes in either order, a reset,
/// TCP, Unix or echo upstreams, splice or copy, small socket buffers and pipes.
/// Every case checks exact delivery, FIN and RST propagation, no reap, and a
/// bounded number of wake-ups.
///
/// `REAPERD_RELAY_SEEDS=N` runs N seeds (default 240, what CI runs), from
/// `REAPERD_RELAY_FIRST_SEED` (default 1); `REAPERD_RELAY_SEED=S` replays one.
/// `make fuzz-relay SEEDS=N` sets them.
@Suite struct RelayScriptTests {
    static let shards = 4

    static func seeds(shard: Int) -> [UInt64] {
        let environment = ProcessInfo.processInfo.environment
        if let one = environment["REAPERD_RELAY_SEED"].flatMap({ UInt64($0) }) { return shard == 0 ? [one] : [] }
        let count = environment["REAPERD_RELAY_SEEDS"].flatMap { UInt64($0) } ?? 240
        let first = environment["REAPERD_RELAY_FIRST_SEED"].flatMap { UInt64($0) } ?? 1
        return stride(from: first + UInt64(shard), to: first + count, by: shards).map { $0 }
    }

    @Test(arguments: 0..<shards) func randomizedScripts(shard: Int) {
        var slowest = (seed: UInt64(0), seconds: 0.0)
        var worstIdle = (seed: UInt64(0), idle: UInt64(0), of: UInt64(0))
        for seed in Self.seeds(shard: shard) {
            let relayCase = RelayCase.random(seed: seed)
            let outcome = relayCase.run()
            if ProcessInfo.processInfo.environment["REAPERD_RELAY_VERBOSE"] != nil {
                print(
                    "\(relayCase)\n  took \(outcome.seconds) s, \(outcome.wakeups) wake-ups (\(outcome.idleWakeups) idle), \(outcome.peerOperations) peer operations"
                )
            }
            #expect(outcome.failures.isEmpty, "\(relayCase)\n  failures: \(outcome.failures.joined(separator: "; "))")
            if outcome.seconds > slowest.seconds { slowest = (seed, outcome.seconds) }
            if outcome.idleWakeups > worstIdle.idle { worstIdle = (seed, outcome.idleWakeups, outcome.wakeups) }
        }
        print(
            "relay shard \(shard): slowest seed \(slowest.seed) took \(String(format: "%.2f", slowest.seconds)) s; "
                + "most idle wake-ups: seed \(worstIdle.seed), \(worstIdle.idle) of \(worstIdle.of)")
    }
}

extension RelayCase {
    /// The script for one seed. Sizes are log-uniform within a class, so small
    /// writes, buffer-sized ones and ones past every buffer all come up.
    static func random(seed: UInt64) -> RelayCase {
        var rng = SplitMix64(seed: seed &* 0x2545_F491_4F6C_DD1D)
        var relayCase = RelayCase()
        relayCase.seed = seed
        relayCase.upstream = [.tcp, .tcp, .tcp, .unix, .unix, .echo].randomElement(using: &rng)!
        relayCase.splice = Int.random(in: 0..<10, using: &rng) < 7
        relayCase.pipeCapacity = 4096 << Int.random(in: 0...6, using: &rng)
        relayCase.client = PeerScript.random(using: &rng)
        relayCase.server = relayCase.upstream == .echo ? PeerScript() : PeerScript.random(using: &rng)
        relayCase.client.receives(from: relayCase.server)
        relayCase.server.receives(from: relayCase.client)
        // At most one side resets: what the other sees is then well defined.
        if relayCase.client.resets && relayCase.server.resets {
            relayCase.server.ending = .fin(afterMilliseconds: 0)
        }
        return relayCase
    }
}

extension PeerScript {
    static func logUniform(_ range: ClosedRange<Int>, using rng: inout SplitMix64) -> Int {
        let low = log(Double(range.lowerBound))
        let high = log(Double(range.upperBound))
        return min(range.upperBound, max(range.lowerBound, Int(exp(Double.random(in: low...high, using: &rng)))))
    }

    static func random(using rng: inout SplitMix64) -> PeerScript {
        var script = PeerScript()
        switch Int.random(in: 0..<100, using: &rng) {
        case 0..<10: script.sends = 0
        case 10..<40: script.sends = logUniform(1...4096, using: &rng)
        case 40..<70: script.sends = logUniform(4096...262_144, using: &rng)
        case 70..<94: script.sends = logUniform(262_144...4 << 20, using: &rng)
        default: script.sends = logUniform(4 << 20...16 << 20, using: &rng)
        }
        script.chunk = logUniform(1...1 << 20, using: &rng)
        // Byte-sized writes of megabytes would take minutes in a debug build.
        script.chunk = max(script.chunk, script.sends / 2000)
        if Int.random(in: 0..<100, using: &rng) < 35 {
            let every = Int.random(in: 1...5, using: &rng)
            // Slow, but done within about a second whatever it is sent.
            let bytes = max(logUniform(512...65536, using: &rng), 16 << 20 * every / 1000 / 1)
            script.reading = .slow(bytes: bytes, everyMilliseconds: every)
        }
        for _ in 0..<Int.random(in: 0...2, using: &rng) {
            script.readPauses.append(
                (Int.random(in: 0...max(1, 2 << 20), using: &rng), Int.random(in: 20...250, using: &rng)))
        }
        script.readPauses.sort { $0.offset < $1.offset }
        for _ in 0..<Int.random(in: 0...2, using: &rng) where script.sends > 0 {
            script.writePauses.append(
                (Int.random(in: 0...script.sends, using: &rng), Int.random(in: 20...200, using: &rng)))
        }
        script.writePauses.sort { $0.offset < $1.offset }
        if Int.random(in: 0..<100, using: &rng) < 12 {
            script.ending = .reset(afterBytes: Int.random(in: 0...script.sends, using: &rng))
        } else {
            script.ending = .fin(afterMilliseconds: [0, 0, 0, 5, 30].randomElement(using: &rng)!)
        }
        let smallest = script.sends > 512 << 10 ? 65536 : 2048
        if Int.random(in: 0..<100, using: &rng) < 40 { script.sendBuffer = logUniform(smallest...262_144, using: &rng) }
        if Int.random(in: 0..<100, using: &rng) < 40 { script.receiveBuffer = logUniform(2048...262_144, using: &rng) }
        return script
    }

    /// Tiny buffers make every queue fill; past 128 KiB they only make
    /// loopback TCP (MSS 64 KiB) wait on window probes, in a direct connection
    /// as much as a relayed one, and a case would take minutes.
    mutating func receives(from sender: PeerScript) {
        if let size = receiveBuffer, sender.sends > 128 << 10 { receiveBuffer = max(size, 65536) }
    }
}
