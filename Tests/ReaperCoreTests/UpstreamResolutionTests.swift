import Testing

@testable import ReaperCore

@Suite("A named upstream's lookups: the last good answer stays")
struct UpstreamResolutionTests {
    private let a = SocketAddress(ip: "198.18.0.5", port: 5432)!
    private let b = SocketAddress(ip: "2001:db8::5", port: 5432)!
    private let c = SocketAddress(ip: "198.18.0.6", port: 5432)!
    private let noAnswer = LookupError(code: -3, message: "Temporary failure in name resolution")

    @Test func firstAnswerRoutesEveryAddressInOrder() {
        var resolution = UpstreamResolution(host: "db.internal", port: 5432)
        #expect(resolution.route == nil, "nothing to connect to before the first answer")
        let event = resolution.record(.success([a, b]), at: Instant(nanoseconds: 1))
        #expect(event == .resolved(first: true, changed: false, recovered: false))
        #expect(resolution.route?.name == "db.internal:5432")
        #expect(resolution.route?.addresses.map(\.description) == ["198.18.0.5:5432", "[2001:db8::5]:5432"])
    }

    @Test func theSameAnswerAgainIsNoChangeAndANewOneIs() {
        var resolution = UpstreamResolution(host: "db.internal", port: 5432)
        _ = resolution.record(.success([a, b]), at: Instant(nanoseconds: 1))
        #expect(
            resolution.record(.success([a, b]), at: Instant(nanoseconds: 2))
                == .resolved(
                    first: false, changed: false, recovered: false))
        #expect(
            resolution.record(.success([b, a]), at: Instant(nanoseconds: 3))
                == .resolved(
                    first: false, changed: true, recovered: false), "a new order is a change: the first is tried first")
        #expect(
            resolution.record(.success([c]), at: Instant(nanoseconds: 4))
                == .resolved(
                    first: false, changed: true, recovered: false))
        #expect(resolution.route?.addresses.map(\.description) == ["198.18.0.6:5432"])
    }

    @Test func failuresKeepTheLastGoodAnswerAndAreReportedOncePerRun() {
        var resolution = UpstreamResolution(host: "db.internal", port: 5432)
        _ = resolution.record(.success([a]), at: Instant(nanoseconds: 1))
        #expect(
            resolution.record(.failure(noAnswer), at: Instant(nanoseconds: 2))
                == .failed(
                    streakStarted: true, keeping: true))
        #expect(
            resolution.record(.failure(noAnswer), at: Instant(nanoseconds: 3))
                == .failed(
                    streakStarted: false, keeping: true))
        #expect(resolution.route?.addresses.map(\.description) == ["198.18.0.5:5432"])
        #expect(resolution.failingSince == Instant(nanoseconds: 2))
        #expect(resolution.lastError == "Temporary failure in name resolution")
        #expect(
            resolution.record(.success([a]), at: Instant(nanoseconds: 4))
                == .resolved(
                    first: false, changed: false, recovered: true))
        #expect(resolution.failingSince == nil)
        #expect(
            resolution.record(.failure(noAnswer), at: Instant(nanoseconds: 5))
                == .failed(
                    streakStarted: true, keeping: true), "a new run of failures is reported again")
    }

    @Test func aNameThatNeverResolvedRoutesNowhere() {
        var resolution = UpstreamResolution(host: "db.internal", port: 5432)
        #expect(
            resolution.record(.failure(noAnswer), at: Instant(nanoseconds: 1))
                == .failed(
                    streakStarted: true, keeping: false))
        #expect(resolution.route == nil)
        #expect(
            resolution.record(.success([a]), at: Instant(nanoseconds: 2))
                == .resolved(
                    first: true, changed: false, recovered: true))
        #expect(resolution.route != nil)
    }

    @Test func aFailedLookupIsRetriedSoonerThanTheInterval() {
        let failed = UpstreamResolution.Event.failed(streakStarted: true, keeping: true)
        let resolved = UpstreamResolution.Event.resolved(first: false, changed: false, recovered: false)
        #expect(UpstreamResolution.delay(after: resolved, interval: .seconds(30)) == .seconds(30))
        #expect(UpstreamResolution.delay(after: failed, interval: .seconds(30)) == .seconds(5))
        #expect(UpstreamResolution.delay(after: failed, interval: .seconds(2)) == .seconds(2))
    }
}
