import Testing

@testable import ReaperCore

/// The byte arithmetic of the crash audit: FINs and a connect(2)'s SYN count
/// one in the kernel's counters and are no data.
@Suite struct CrashAuditTests {
    func socket(
        _ state: TCPInfo.State = .established, received: UInt64 = 0, acked: UInt64 = 0, unread: Int = 0,
        unacknowledged: Int = 0, connected: Bool = false
    ) -> CrashAudit.Socket {
        var info = TCPInfo()
        info.state = state.rawValue
        info.bytesReceived = received
        info.bytesAcked = acked
        var socket = CrashAudit.Socket(info: info, unread: unread, unacknowledged: unacknowledged)
        socket.openedByConnect = connected
        return socket
    }

    @Test func everyByteReadWasWritten() {
        // Client sent 100, 10 still unread; upstream took 90 (80 acked, 10 queued), SYN counted.
        let client = socket(received: 100, acked: 50, unread: 10)
        let upstream = socket(received: 50, acked: 81, unacknowledged: 10, connected: true)
        #expect(CrashAudit.lostBytes(client: client, upstream: upstream, synBias: 1) == 0)
        // A kernel that does not count the SYN.
        let plain = socket(received: 50, acked: 80, unacknowledged: 10, connected: true)
        #expect(CrashAudit.lostBytes(client: client, upstream: plain, synBias: 0) == 0)
    }

    @Test func bytesInThePipeAreLost() {
        let client = socket(received: 1000, acked: 0)
        let upstream = socket(received: 0, acked: 1 + 744, connected: true)
        #expect(CrashAudit.lostBytes(client: client, upstream: upstream, synBias: 1) == 256)
    }

    @Test func halfClosedBothWaysIsNoLoss() {
        // The client's FIN read and passed on: both counters carry one for it.
        let client = socket(.closeWait, received: 11, acked: 5)
        let upstream = socket(.finWait2, received: 5, acked: 1 + 10 + 1, connected: true)
        #expect(CrashAudit.lostBytes(client: client, upstream: upstream, synBias: 1) == 0)
        // The FIN arrived but was not read yet: it still counts in bytes_received.
        let unreadFIN = socket(.closeWait, received: 11, acked: 5)
        let notPassed = socket(received: 5, acked: 1 + 10, connected: true)
        #expect(CrashAudit.lostBytes(client: unreadFIN, upstream: notPassed, synBias: 1) == 0)
    }

    @Test func echoIsOneSocketBothWays() {
        #expect(CrashAudit.lostBytes(client: socket(received: 64, acked: 64), upstream: nil, synBias: 1) == 0)
        #expect(CrashAudit.lostBytes(client: socket(received: 64, acked: 0), upstream: nil, synBias: 1) == 64)
    }

    /// What this kernel counts for a SYN, asked over loopback (1 on Linux 6.1).
    @Test func theKernelAnswersForItsSYN() throws {
        let bias = try #require(CrashAudit.synBias())
        #expect(bias == 0 || bias == 1)
    }
}
