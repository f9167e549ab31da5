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
        client: TCPInfo?, upstream: TCPInfo? = nil, clientError: Errno? = nil, upstreamError: Errno? = nil,
        moved: Bool = false, idle: Duration = .zero, halfClosed: Duration? = nil
    ) -> SweepObservation {
        SweepObservation(
            client: client, upstream: upstream, clientError: clientError, upstreamError: upstreamError,
            bytesMoved: moved, idleFor: idle, halfClosedFor: halfClosed)
    }

    @Test func healthFollowsTCPInfo() {
        #expect(ReapPolicy.health(observe(client: info(), moved: true)) == .active)
        #expect(ReapPolicy.health(observe(client: info())) == .idle)
        #expect(ReapPolicy.health(observe(client: info(probes: 1))) == .probing)
        #expect(ReapPolicy.health(observe(client: info(), upstream: info(probes: 2))) == .probing)
        #expect(ReapPolicy.health(observe(client: info(state: .close))) == .dead)
        #expect(ReapPolicy.health(observe(client: info(), upstreamError: .timedOut)) == .dead)
        // Probes on a socket that is no longer established are not "probing".
        #expect(ReapPolicy.health(observe(client: info(state: .finWait1, probes: 1))) == .idle)
    }

    @Test func keepaliveWhenNothingWasInFlight() {
        var evidence = ReapEvidence()
        evidence.record(info(probes: 1), bytesWaitingForClient: false)
        let reason = ReapPolicy.decide(
            observe(client: info(state: .close), clientError: .timedOut), evidence: evidence, settings: .defaults)
        #expect(reason == .keepalive)
    }

    @Test func userTimeoutWhenDataWasUnacknowledged() {
        var evidence = ReapEvidence()
        evidence.record(info(unacked: 4), bytesWaitingForClient: false)
        let reason = ReapPolicy.decide(
            observe(client: info(state: .close), clientError: .timedOut), evidence: evidence, settings: .defaults)
        #expect(reason == .userTimeout)
    }

    @Test func userTimeoutWhenTheWindowWasClosed() {
        var evidence = ReapEvidence()
        evidence.record(info(probes: 3, notSent: 65536), bytesWaitingForClient: true)
        #expect(ReapPolicy.clientDeathReason(.timedOut, evidence: evidence) == .userTimeout)
    }

    @Test func evidenceClearsOnceEverythingIsAcknowledged() {
        var evidence = ReapEvidence()
        evidence.record(info(unacked: 2), bytesWaitingForClient: false)
        evidence.record(info(), bytesWaitingForClient: false)
        #expect(!evidence.sawDataInFlight)
        #expect(ReapPolicy.clientDeathReason(.timedOut, evidence: evidence) == .keepalive)
    }

    @Test func upstreamDeathIsUpstreamDead() {
        let reason = ReapPolicy.decide(
            observe(client: info(), upstream: info(state: .close), upstreamError: .timedOut), evidence: ReapEvidence(),
            settings: .defaults)
        #expect(reason == .upstreamDead)
    }

    @Test func resetIsNotAReap() {
        let reason = ReapPolicy.decide(
            observe(client: info(state: .close), clientError: .connectionReset), evidence: ReapEvidence(),
            settings: .defaults)
        #expect(reason == nil)
    }

    @Test func idleTimeoutOnlyWhenConfiguredAndIdle() {
        var settings = ConnectionSettings.defaults
        #expect(
            ReapPolicy.decide(observe(client: info(), idle: .seconds(3600)), evidence: .init(), settings: settings)
                == nil)
        settings.idleTimeout = .seconds(30)
        #expect(
            ReapPolicy.decide(observe(client: info(), idle: .seconds(29)), evidence: .init(), settings: settings) == nil
        )
        #expect(
            ReapPolicy.decide(observe(client: info(), idle: .seconds(30)), evidence: .init(), settings: settings)
                == .idleTimeout)
        #expect(
            ReapPolicy.decide(
                observe(client: info(), moved: true, idle: .seconds(30)), evidence: .init(), settings: settings)
                == nil)
    }

    @Test func halfCloseTimeout() {
        var settings = ConnectionSettings.defaults
        settings.halfCloseTimeout = .seconds(5)
        #expect(
            ReapPolicy.decide(observe(client: info(), halfClosed: .seconds(4)), evidence: .init(), settings: settings)
                == nil)
        #expect(
            ReapPolicy.decide(observe(client: info(), halfClosed: .seconds(5)), evidence: .init(), settings: settings)
                == .halfCloseTimeout)
        settings.halfCloseTimeout = .zero
        #expect(
            ReapPolicy.decide(observe(client: info(), halfClosed: .seconds(99)), evidence: .init(), settings: settings)
                == nil)
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
