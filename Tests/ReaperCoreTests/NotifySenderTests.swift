import Glibc
import Testing

@testable import ReaperCore

/// The ordered, non-blocking notify queue against a real datagram socket that
/// stops reading (its kernel queue holds about ten messages).
/// A receiving datagram socket in a fresh directory, and a sender connected to it.
final class NotifyPair {
    let directory: String
    let receiver: FileDescriptor
    let sender: NotifySender

    init() throws {
        var template = Array("/tmp/reaperd-notify-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        let path = directory + "/notify.sock"
        receiver = try Sockets.datagram(family: AF_UNIX)
        try Sockets.bind(receiver.raw, try #require(SocketAddress(unixPath: path)))
        sender = try #require(NotifySender(notifySocket: path))
    }

    deinit { _ = system("rm -rf '\(directory)'") }
}

@Suite struct NotifySenderTests {
    @Test func keepsOrderAndCoalescesWhatIsSuperseded() throws {
        let pair = try NotifyPair()
        let sender = pair.sender

        for index in 0..<30 { sender.send("X=\(index)") }
        #expect(sender.pendingCount > 0, "the receiver's queue should be full by now")
        let waiting = sender.pendingCount
        // A STATUS-only message is dropped once a later one carries STATUS=;
        // a second WATCHDOG=1 is not queued behind the first.
        sender.send("STATUS=a")
        sender.send("WATCHDOG=1")
        sender.send("STATUS=b")
        sender.send("WATCHDOG=1")
        sender.send("STATUS=c")
        #expect(sender.pendingCount == waiting + 2)
        sender.send("READY=1\nSTATUS=d")
        sender.send("STATUS=e")
        #expect(sender.pendingCount == waiting + 3)

        var received: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<100 where received.count < 33 {
            while case .processed(let count) = try buffer.withUnsafeMutableBytes({
                try Sockets.read(pair.receiver.raw, into: $0)
            }) {
                received.append(String(decoding: buffer[0..<count], as: UTF8.self))
            }
            sender.flush(within: .milliseconds(10))
        }
        #expect(sender.pendingCount == 0)
        #expect(received == (0..<30).map { "X=\($0)" } + ["WATCHDOG=1", "READY=1\nSTATUS=d", "STATUS=e"])
    }

    @Test func flushAtExitGivesUpAfterItsLimit() throws {
        let pair = try NotifyPair()
        let sender = pair.sender
        for index in 0..<30 { sender.send("X=\(index)") }
        let started = Instant.now()
        sender.flush(within: .milliseconds(200))
        let waited = Instant.now().since(started)
        #expect(sender.pendingCount > 0)
        #expect(waited >= .milliseconds(150) && waited < .seconds(2))
    }

    /// A store still waiting is withdrawn (PID 1 never saw it) and its
    /// duplicates closed; one already sent is not, so its removal goes out.
    @Test func withdrawsOnlyStoresStillWaiting() throws {
        let pair = try NotifyPair()
        let sender = pair.sender
        let sent = try Files.duplicate(pair.receiver.raw)
        sender.store(sent, name: "p@0")
        #expect(sender.pendingCount == 0)
        for index in 0..<30 { sender.send("X=\(index)") }
        #expect(sender.pendingCount > 0)
        func openDescriptors() -> Int {
            guard let directory = opendir("/proc/self/fd") else { return -1 }
            defer { closedir(directory) }
            var count = 0
            while readdir(directory) != nil { count += 1 }
            return count
        }
        let before = openDescriptors()
        sender.store(try Files.duplicate(pair.receiver.raw), try Files.duplicate(pair.receiver.raw), name: "p@1")
        sender.store(try Files.duplicate(pair.receiver.raw), name: "p@2")
        #expect(openDescriptors() == before + 3)
        #expect(sender.withdrawStores(named: "p@0") == 0, "p@0 went out: only FDSTOREREMOVE takes it back")
        #expect(sender.withdrawStores(named: "p@1") == 1)
        #expect(sender.withdrawStores(named: "p@1") == 0)
        #expect(openDescriptors() == before + 1, "the withdrawn store's two duplicates are closed")

        var received: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<100 where sender.pendingCount > 0 || received.count < 32 {
            while case .processed(let count) = try buffer.withUnsafeMutableBytes({
                try Sockets.read(pair.receiver.raw, into: $0)
            }) {
                received.append(String(decoding: buffer[0..<count], as: UTF8.self))
            }
            sender.flush(within: .milliseconds(10))
        }
        #expect(received.filter { $0.hasPrefix("FDSTORE=1") } == ["FDSTORE=1\nFDNAME=p@0", "FDSTORE=1\nFDNAME=p@2"])
    }
}
