import Testing

@testable import ReaperCore

/// The relay's promises one at a time, each the case that broke it: a real
/// `Connection` on a real loop with the sweep running (see RelayHarness).
@Suite struct ConnectionTests {
    /// The client asks and half-closes; the upstream answers more than every
    /// buffer holds and closes. Its socket is then in TCP_CLOSE with bytes still
    /// unread before the FIN, and reports EPOLLHUP on every wait while the flow
    /// to the paused client is full. Every byte must arrive; the loop must sleep.
    @Test(arguments: [UpstreamKind.tcp, .unix], [true, false])
    func answerAfterHalfCloseReachesAPausedReader(upstream: UpstreamKind, splice: Bool) {
        var relayCase = RelayCase()
        relayCase.upstream = upstream
        relayCase.splice = splice
        relayCase.sweepEvery = .milliseconds(5)
        relayCase.client.sends = 1000
        relayCase.client.receiveBuffer = 4096
        relayCase.relaySendBuffer = 16384
        relayCase.client.readPauses = [(0, 400), (1 << 20, 300)]
        relayCase.server.sends = 2 << 20
        relayCase.server.chunk = 1 << 20
        let outcome = relayCase.run()
        #expect(outcome.failures.isEmpty, "\(outcome.failures)")
        // While the client reads nothing, nothing can move: the relay sleeps.
        // A spin is thousands of wake-ups in these 700 ms.
        #expect(
            outcome.idleWakeupsWhileClientPaused <= 4,
            "\(outcome.idleWakeupsWhileClientPaused) wake-ups moved nothing while the client paused")
    }

    /// The mirror: the upstream greets and half-closes first; the client then
    /// uploads more than every buffer holds to an upstream that reads slowly.
    @Test(arguments: [UpstreamKind.tcp, .unix])
    func uploadAfterUpstreamHalfCloseReachesASlowUpstream(upstream: UpstreamKind) {
        var relayCase = RelayCase()
        relayCase.upstream = upstream
        relayCase.sweepEvery = .milliseconds(5)
        relayCase.server.sends = 200
        relayCase.server.reading = .slow(bytes: 64 << 10, everyMilliseconds: 5)
        relayCase.server.readPauses = [(0, 300)]
        relayCase.client.sends = 3 << 20
        relayCase.client.chunk = 1 << 20
        relayCase.upstreamSendBuffer = 16384
        relayCase.client.ending = .fin(afterMilliseconds: 0)
        let outcome = relayCase.run()
        #expect(outcome.failures.isEmpty, "\(outcome.failures)")
    }

    /// `half_close_timeout` counts silence, not time since the FIN: a download
    /// that keeps moving for five times the timeout after the client's FIN is
    /// not cut (SPEC §5).
    @Test func halfCloseTimeoutSparesADownloadThatKeepsMoving() {
        var relayCase = RelayCase()
        relayCase.settings.halfCloseTimeout = .milliseconds(300)
        relayCase.client.sends = 10
        relayCase.server.sends = 1 << 20
        relayCase.server.chunk = 16 << 10
        relayCase.server.writePauses = (1...15).map { ($0 * 64 << 10, 100) }
        let outcome = relayCase.run()
        #expect(outcome.failures.isEmpty, "\(outcome.failures)")
        #expect(outcome.seconds >= 1.5)
    }

    /// And it does reap once the open direction has been silent that long.
    @Test func halfCloseTimeoutReapsASilentOpenDirection() {
        var relayCase = RelayCase()
        relayCase.settings.halfCloseTimeout = .milliseconds(300)
        relayCase.client.sends = 10
        relayCase.server.sends = 100
        // Holds its side open, silent, far past the timeout.
        relayCase.server.ending = .fin(afterMilliseconds: 3000)
        relayCase.deadline = .seconds(4)
        let outcome = relayCase.run()
        #expect(outcome.end == .reaped(.halfCloseTimeout))
        let after = outcome.endedAfter ?? 99
        // From the start of the case, set-up included (slow under sanitizers).
        #expect(after >= 0.3 && after < 3.0, "reaped after \(after) s")
    }

    /// An upstream that greets and resets before the relay has seen its connect
    /// complete: the greeting is still delivered, then the reset passes on (it
    /// is no connect failure: the upstream did answer).
    @Test func greetingBeforeAnImmediateResetIsDelivered() {
        var relayCase = RelayCase()
        relayCase.client.sends = 0
        relayCase.client.ending = .fin(afterMilliseconds: 200)
        relayCase.server.sends = 100
        relayCase.server.ending = .reset(afterBytes: 100)
        let outcome = relayCase.run()
        #expect(outcome.failures.isEmpty, "\(outcome.failures)")
        #expect(outcome.clientReceived == 100)
    }

    /// A reset passes on as a reset, after the bytes that came before it: the
    /// client reads a prefix of the answer, then ECONNRESET, never a clean EOF.
    @Test(arguments: [true, false])
    func upstreamResetReachesTheClientAsAReset(splice: Bool) {
        var relayCase = RelayCase()
        relayCase.splice = splice
        relayCase.client.sends = 100
        relayCase.client.reading = .slow(bytes: 16 << 10, everyMilliseconds: 2)
        relayCase.server.sends = 2 << 20
        relayCase.server.ending = .reset(afterBytes: 1 << 20)
        let outcome = relayCase.run()
        #expect(outcome.failures.isEmpty, "\(outcome.failures)")
    }
}
