import Testing

@testable import ReaperCore

@Suite struct ReapPolicyTests {
    func info(state: TCPInfo.State = .established, probes: UInt8 = 0, unacked: UInt32 = 0, notSent: UInt32 = 0)
        -> TCPInfo
    {
        var info = TCPInfo()
        info.state = state.rawValue
        info.probes = probes
        info.unacked = unacked
        info.notSentBytes = notSent
        return info
    }

    func observe(
        client: TCPInfo?, upstream: TCPInfo? = nil, faulted: Bool = false, moved: Bool = false,
        idle: Duration = .zero, silentAfterHalfClose: Duration? = nil
    ) -> SweepObservation {
        SweepObservation(
            client: client, upstream: upstream, faulted: faulted, bytesMoved: moved, idleFor: idle,
            halfCloseSilence: silentAfterHalfClose)
    }

    @Test func healthFollowsTCPInfo() {
        #expect(ReapPolicy.health(observe(client: info(), moved: true)) == .active)
        #expect(ReapPolicy.health(observe(client: info())) == .idle)
        #expect(ReapPolicy.health(observe(client: info(probes: 1))) == .probing)
        #expect(ReapPolicy.health(observe(client: info(), upstream: info(probes: 2))) == .probing)
        #expect(ReapPolicy.health(observe(client: info(), faulted: true)) == .dead)
        // Probes on a socket that is no longer established are not "probing".
        #expect(ReapPolicy.health(observe(client: info(state: .finWait1, probes: 1))) == .idle)
    }

    /// Both FINs exchanged leaves a socket in TCP_CLOSE with bytes still to read:
    /// an orderly end on its way, not a dead connection (the truncation bug).
    @Test func orderlyCloseIsNotDeadAndNotAReap() {
        let closing = observe(client: info(), upstream: info(state: .close), moved: true)
        #expect(ReapPolicy.health(closing) == .active)
        #expect(ReapPolicy.decide(closing, settings: .defaults) == nil)
        #expect(ReapPolicy.health(observe(client: info(state: .close))) == .idle)
    }

    @Test func theKernelGivingUpIsTheOnlyDeathToReap() {
        for errno in [Errno.timedOut, .hostUnreachable, .networkUnreachable] {
            #expect(errno.isPeerUnreachable)
            #expect(errno.isDisconnect)
        }
        for errno in [Errno.connectionReset, .brokenPipe, .connectionAborted, .wouldBlock, .noMemory] {
            #expect(!errno.isPeerUnreachable)
        }
    }

    @Test func keepaliveWhenNothingWasInFlight() {
        var evidence = ReapEvidence()
        evidence.record(info(probes: 1), bytesWaitingForClient: false)
        #expect(ReapPolicy.clientDeathReason(evidence: evidence) == .keepalive)
    }

    @Test func userTimeoutWhenDataWasUnacknowledged() {
        var evidence = ReapEvidence()
        evidence.record(info(unacked: 4), bytesWaitingForClient: false)
        #expect(ReapPolicy.clientDeathReason(evidence: evidence) == .userTimeout)
    }

    @Test func userTimeoutWhenTheWindowWasClosed() {
        var evidence = ReapEvidence()
        evidence.record(info(probes: 3, notSent: 65536), bytesWaitingForClient: true)
        #expect(ReapPolicy.clientDeathReason(evidence: evidence) == .userTimeout)
    }

    @Test func evidenceClearsOnceEverythingIsAcknowledged() {
        var evidence = ReapEvidence()
        evidence.record(info(unacked: 2), bytesWaitingForClient: false)
        evidence.record(info(), bytesWaitingForClient: false)
        #expect(!evidence.sawDataInFlight)
        #expect(ReapPolicy.clientDeathReason(evidence: evidence) == .keepalive)
    }

    @Test func idleTimeoutOnlyWhenConfiguredAndIdle() {
        var settings = ConnectionSettings.defaults
        #expect(ReapPolicy.decide(observe(client: info(), idle: .seconds(3600)), settings: settings) == nil)
        settings.idleTimeout = .seconds(30)
        #expect(ReapPolicy.decide(observe(client: info(), idle: .seconds(29)), settings: settings) == nil)
        #expect(ReapPolicy.decide(observe(client: info(), idle: .seconds(30)), settings: settings) == .idleTimeout)
        #expect(ReapPolicy.decide(observe(client: info(), moved: true, idle: .seconds(30)), settings: settings) == nil)
    }

    @Test func halfCloseTimeoutCountsSilenceNotTimeSinceTheFIN() {
        var settings = ConnectionSettings.defaults
        settings.halfCloseTimeout = .seconds(5)
        #expect(
            ReapPolicy.decide(observe(client: info(), silentAfterHalfClose: .seconds(4)), settings: settings) == nil)
        #expect(
            ReapPolicy.decide(observe(client: info(), silentAfterHalfClose: .seconds(5)), settings: settings)
                == .halfCloseTimeout)
        settings.halfCloseTimeout = .zero
        #expect(
            ReapPolicy.decide(observe(client: info(), silentAfterHalfClose: .seconds(99)), settings: settings) == nil)
    }
}

@Suite struct SweepScheduleTests {
    let now = Instant(nanoseconds: 1_000_000_000_000)

    func info(probes: UInt8 = 0, unacked: UInt32 = 0, silentMs: UInt32) -> TCPInfo {
        var info = TCPInfo()
        info.state = TCPInfo.State.established.rawValue
        info.probes = probes
        info.unacked = unacked
        info.lastAckReceivedMilliseconds = silentMs
        info.lastDataReceivedMilliseconds = silentMs + 5000
        return info
    }

    @Test func healthyIdleSocketIsReadWhenTheFirstProbeCanGoOut() {
        let next = ReapPolicy.nextCheck(after: info(silentMs: 20_000), keepaliveIdleSeconds: 60, now: now)
        #expect(next == now.adding(.seconds(40)))
    }

    @Test func probingOrBusySocketsAreReadEverySweep() {
        #expect(
            ReapPolicy.nextCheck(after: info(probes: 1, silentMs: 61_000), keepaliveIdleSeconds: 60, now: now) == now)
        #expect(ReapPolicy.nextCheck(after: info(unacked: 3, silentMs: 10), keepaliveIdleSeconds: 60, now: now) == now)
        #expect(ReapPolicy.nextCheck(after: info(silentMs: 60_000), keepaliveIdleSeconds: 60, now: now) == now)
        var closed = info(silentMs: 0)
        closed.state = TCPInfo.State.close.rawValue
        #expect(ReapPolicy.nextCheck(after: closed, keepaliveIdleSeconds: 60, now: now) == now)
    }

    @Test func withoutKeepaliveTheSafetyNetIsAMinute() {
        #expect(
            ReapPolicy.nextCheck(after: info(silentMs: 0), keepaliveIdleSeconds: nil, now: now)
                == now.adding(.seconds(60)))
    }
}

/// Silence counts bytes that move anywhere: through reaperd, or out of the
/// kernel's queues (the randomized relay test's seed 69 once found a living
/// upload reaped while its megabytes drained from a send queue).
@Suite struct SilenceTests {
    let start = Instant(nanoseconds: 1_000_000_000_000)

    func at(_ milliseconds: Int64) -> Instant { start.adding(.milliseconds(milliseconds)) }

    @Test func bytesDrainingFromTheKernelAreNotSilence() {
        // reaperd last moved a byte 5 s ago; the kernel's counters moved 100 ms ago.
        let silence = ReapPolicy.Silence(
            relayMovedAt: at(0), kernelMovedAt: at(4900), halfClosedAt: at(1000), now: at(5000))
        #expect(silence.afterHalfClose == .milliseconds(100))
        #expect(silence.idleFor == .milliseconds(100))
        var settings = ConnectionSettings.defaults
        settings.halfCloseTimeout = .seconds(1)
        let observation = SweepObservation(
            client: nil, upstream: nil, bytesMoved: false, idleFor: silence.idleFor,
            halfCloseSilence: silence.afterHalfClose)
        #expect(ReapPolicy.decide(observation, settings: settings) == nil)
    }

    @Test func silenceAfterAHalfCloseStartsAtTheFINAtTheEarliest() {
        let silence = ReapPolicy.Silence(
            relayMovedAt: at(0), kernelMovedAt: at(0), halfClosedAt: at(3000), now: at(5000))
        #expect(silence.afterHalfClose == .seconds(2))
        #expect(silence.idleFor == .seconds(5))
        #expect(
            ReapPolicy.Silence(relayMovedAt: at(0), kernelMovedAt: at(0), halfClosedAt: nil, now: at(5000))
                .afterHalfClose == nil)
    }

    @Test func kernelCountersMoveOnlyWhenTheyChange() {
        var watch = ReaperWatch()
        var info = TCPInfo()
        info.bytesAcked = 100
        info.bytesReceived = 50
        let first = watch.noteKernelBytes(info, upstream: false, now: at(10))
        let unchanged = watch.noteKernelBytes(info, upstream: false, now: at(20))
        #expect(first && !unchanged)
        #expect(watch.kernelMovedAt == at(10))
        // The upstream socket keeps its own count.
        let upstream = watch.noteKernelBytes(info, upstream: true, now: at(30))
        info.bytesAcked += 1
        let acked = watch.noteKernelBytes(info, upstream: false, now: at(40))
        #expect(upstream && acked)
        #expect(watch.kernelMovedAt == at(40))
    }
}
