import Glibc
import Testing

@testable import ReaperCore

/// The resolver thread on a real loop: answers come back on the loop thread,
/// each under its own ticket, and the loop never waits for them. Names that
/// need no DNS server (/etc/hosts, numeric text) keep it off the network.
@Suite("Resolver: lookups off the loop")
struct ResolverTests {
    /// Runs `loop` until `done()` or `limit`, whichever is first.
    private func run(_ loop: EventLoop, limit: Duration = .seconds(2), until done: @escaping () -> Bool) {
        let deadline = Instant.now().adding(limit)
        func poll() {
            if done() || Instant.now() >= deadline { return loop.stop() }
            loop.schedule(after: .milliseconds(5)) { poll() }
        }
        poll()
        try? loop.run()
    }

    @Test func answersComeBackOnTheLoopUnderTheirTickets() throws {
        let loop = try EventLoop()
        let loopThread = pthread_self()
        var answers: [UInt64: LookupAnswer] = [:]
        var onLoopThread = true
        let resolver = try Resolver(loop: loop) { answer in
            onLoopThread = onLoopThread && pthread_equal(pthread_self(), loopThread) != 0
            answers[answer.ticket] = answer
        }
        defer { resolver.close() }
        let local = resolver.lookUp(host: "localhost", port: 5432)
        let numeric = resolver.lookUp(host: "127.0.0.9", port: 1)
        let v6 = resolver.lookUp(host: "::1", port: 2)
        #expect(Set([local, numeric, v6]).count == 3)
        run(loop) { answers.count == 3 }
        #expect(onLoopThread)
        let addresses = try #require(try? answers[local]?.result.get())
        #expect(addresses.map(\.description).contains("127.0.0.1:5432"))
        #expect(Set(addresses.map(\.description)).count == addresses.count, "each address once")
        #expect((try? answers[numeric]?.result.get())?.map(\.description) == ["127.0.0.9:1"])
        #expect((try? answers[v6]?.result.get())?.map(\.description) == ["[::1]:2"])
    }

    @Test func manyLookupsFromTheLoopAreAllAnswered() throws {
        let loop = try EventLoop()
        var answered = Set<UInt64>()
        let resolver = try Resolver(loop: loop) { answered.insert($0.ticket) }
        defer { resolver.close() }
        var asked = Set<UInt64>()
        // Asked in bursts while answers arrive: the queue and the wake-ups race.
        func ask(_ round: Int) {
            for index in 0..<10 { asked.insert(resolver.lookUp(host: "127.0.\(round).\(index)", port: 80)) }
            if round < 9 { loop.schedule(after: .milliseconds(1)) { ask(round + 1) } }
        }
        ask(0)
        run(loop) { answered.count == 100 }
        #expect(answered == asked)
    }

    @Test func closingWithLookupsQueuedIsSafe() throws {
        let loop = try EventLoop()
        var answered = 0
        let resolver = try Resolver(loop: loop) { _ in answered += 1 }
        for index in 0..<50 { _ = resolver.lookUp(host: "127.1.0.\(index)", port: 80) }
        resolver.close()
        // Long enough for the thread to have answered all fifty, had it not stopped.
        run(loop, limit: .milliseconds(300)) { answered > 0 }
        #expect(answered == 0, "no answer after close")
    }
}
