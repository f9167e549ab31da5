import Glibc
import Testing

@testable import ReaperCore

/// When the sweep next looks at a connection it has just looked at
/// (`Reaper.nextLook`): a real relayed connection over loopback sockets, its
/// TCP_INFO read by the real `Reaper.examine`.
@Suite struct NextLookTests {
    let loop = try! EventLoop()
    let owner: RelayOwner
    let poll = Duration.seconds(1)

    init() { owner = RelayOwner(loop: loop, pipes: PipePool()) }

    private func connection(_ settings: ConnectionSettings, _ pair: ConnectionStoreTests.LivePair) -> Connection {
        let listener = ListenerState(settings: ListenerSettings(name: "pg", mode: .relay, connection: settings))
        let connection = Connection(
            recoveredID: 1, listener: listener, client: FileDescriptor(owning: pair.client),
            peer: try! Sockets.peerAddress(pair.client), upstream: FileDescriptor(owning: pair.upstream),
            upstreamAddress: pair.back.boundAddress, acceptedAt: nil, owner: owner, now: loop.now)
        #expect(connection.resume())
        return connection
    }

    /// Idle and healthy: not before its sockets could have a keepalive probe
    /// out, a keepalive_idle ahead, unless a deadline of reaperd's own comes
    /// first; never sooner than the next sweep.
    @Test func anIdleConnectionWaitsForItsFirstDeadline() {
        var settings = ConnectionSettings()
        settings.keepaliveIdle = 60
        let pair = ConnectionStoreTests.LivePair()
        let connection = connection(settings, pair)
        defer { connection.end(.shutdown) }
        // The first read finds the kernel's counters moved (from nothing to the
        // handshake): busy, looked at again next sweep. The second finds them still.
        #expect(Reaper.examine(connection, now: Instant.now()).busy)
        let now = Instant.now()
        let look = Reaper.examine(connection, now: now)
        #expect(look.sockets == 0, "a socket with no probe possible yet was read again")
        #expect(!look.busy)
        let keepalive = Reaper.nextLook(connection, busy: false, now: now, pollInterval: poll, storeAt: nil)
        #expect(keepalive > now.adding(.seconds(58)) && keepalive <= now.adding(.seconds(60)))

        // The descriptor store's turn, when it comes first.
        let store = now.adding(.seconds(2))
        #expect(Reaper.nextLook(connection, busy: false, now: now, pollInterval: poll, storeAt: store) == store)
        // A deadline already past is the next sweep, not now: the sweep ends.
        let past = now.adding(.seconds(-5))
        #expect(
            Reaper.nextLook(connection, busy: false, now: now, pollInterval: poll, storeAt: past) == now.adding(poll))
        // Busy: the next sweep, whatever the deadlines.
        #expect(Reaper.nextLook(connection, busy: true, now: now, pollInterval: poll, storeAt: nil) == now.adding(poll))
    }

    /// idle_timeout counts from the last bytes moved, here the kernel's first
    /// read, and comes before a keepalive_idle of 60 s.
    @Test func theIdleTimeoutComesFirstWhenShorter() {
        var settings = ConnectionSettings()
        settings.keepaliveIdle = 60
        settings.idleTimeout = .seconds(30)
        let pair = ConnectionStoreTests.LivePair()
        let connection = connection(settings, pair)
        defer { connection.end(.shutdown) }
        let now = Instant.now()
        Reaper.examine(connection, now: now)
        let lastMoved = max(connection.lastActivity, connection.watch.kernelMovedAt)
        #expect(
            Reaper.nextLook(connection, busy: false, now: now, pollInterval: poll, storeAt: nil)
                == lastMoved.adding(.seconds(30)))
    }
}
