import Glibc
import Testing

@testable import ReaperCore

/// Copy or splice, chosen per flow from what it moved (Flow): small messages
/// copy through the loop's buffer and never take a pipe; a stream splices;
/// a stream that turns into small messages copies again. Real TCP sockets on
/// loopback, the flow pumped by hand.
@Suite struct FlowModeTests {
    /// A connected pair on loopback: the peer's end and the relay's end.
    private func tcpPair() -> (peer: Int32, relay: Int32) {
        let listener = TestListener(unix: false)
        let peer = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        _ = listener.boundAddress.withSockaddr { Glibc.connect(peer, $0, $1) }
        return (peer, listener.acceptOne())
    }

    private func send(_ fd: Int32, _ count: Int, byte: UInt8) {
        let bytes = [UInt8](repeating: byte, count: count)
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }
        precondition(sent == count, "loopback took \(sent) of \(count) bytes")
    }

    /// Everything queued on `fd` (nonblocking), waiting up to a second for `count`.
    private func receive(_ fd: Int32, _ count: Int) -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        for _ in 0..<1000 where received.count < count {
            let got = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if got > 0 { received += buffer[0..<got] } else { usleep(1000) }
        }
        return received
    }

    /// Pumps until `count` more bytes were delivered (bounded).
    private func pump(_ flow: inout Flow, _ from: Int32, _ to: Int32, _ pool: PipePool, until count: UInt64) {
        for _ in 0..<1000 where flow.bytes < count {
            _ = try? flow.pump(from: from, to: to, pool: pool, readSource: true)
            if flow.bytes < count { usleep(1000) }
        }
    }

    @Test func smallMessagesCopyAStreamSplicesAndSmallMessagesCopyAgain() {
        let pool = PipePool()
        let source = tcpPair()
        let destination = tcpPair()
        defer { for fd in [source.peer, source.relay, destination.peer, destination.relay] { close(fd) } }
        var flow = Flow()
        var expected: UInt64 = 0

        // Requests of 100 bytes: copied, no pipe ever made.
        for index in 0..<20 {
            send(source.peer, 100, byte: UInt8(index))
            expected += 100
            pump(&flow, source.relay, destination.relay, pool, until: expected)
            #expect(receive(destination.peer, 100) == [UInt8](repeating: UInt8(index), count: 100))
        }
        #expect(!flow.splicing)
        #expect(pool.created == 0, "small messages took a pipe")

        // A stream: reads fill the copy buffer, and the flow splices.
        send(source.peer, 1 << 20, byte: 0xAB)
        expected += 1 << 20
        var streamed: [UInt8] = []
        for _ in 0..<1000 where flow.bytes < expected {
            _ = try? flow.pump(from: source.relay, to: destination.relay, pool: pool, readSource: true)
            streamed += receive(destination.peer, 1)
        }
        streamed += receive(destination.peer, (1 << 20) - streamed.count)
        #expect(streamed.count == 1 << 20 && streamed.allSatisfy { $0 == 0xAB })
        #expect(flow.splicing)
        #expect(pool.created >= 1, "a stream of 1 MiB never spliced")

        // Small again: after a few small splices it copies and holds no pipe.
        for index in 0..<Int(Flow.smallSplicesToCopy) + 3 {
            send(source.peer, 200, byte: UInt8(index))
            expected += 200
            pump(&flow, source.relay, destination.relay, pool, until: expected)
            #expect(receive(destination.peer, 200) == [UInt8](repeating: UInt8(index), count: 200))
        }
        #expect(!flow.splicing)
        #expect(pool.inUse == 0)
    }

    /// A stream longer than one pump moves: the pump stops at its bound, and
    /// what its last round read goes on before it returns, so the flow waits
    /// with nothing pending and its sockets keep their interests (a pipeful
    /// left behind cost four epoll_ctl and a wake-up per pipeful).
    @Test func aPumpCutShortByItsBoundLeavesNothingWaiting() {
        // Pipes of one copy buffer: the smallest whose splices count as a stream.
        let pool = PipePool(pipeCapacity: Flow.copyBufferSize)
        let source = tcpPair()
        let destination = tcpPair()
        defer { for fd in [source.peer, source.relay, destination.peer, destination.relay] { close(fd) } }
        // More than the pump's rounds can move: two copy-buffer reads (which
        // make the flow splice), then a pipeful per round.
        let wanted = (2 + Flow.roundsPerPump + 4) * Flow.copyBufferSize
        let sent = (0..<wanted).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        var queued = 0
        for _ in 0..<1000 where queued < wanted {
            let count = sent[queued...].withUnsafeBytes {
                Glibc.send(source.peer, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT))
            }
            if count > 0 { queued += count } else { usleep(1000) }
        }
        #expect(queued == wanted)
        usleep(20_000)  // every byte in the relay's receive queue
        var flow = Flow()
        _ = try? flow.pump(from: source.relay, to: destination.relay, pool: pool, readSource: true)
        #expect(flow.splicing)
        #expect(flow.bytes < UInt64(wanted), "one pump moved everything; the bound was never reached")
        #expect(flow.pending == 0, "the last round's read was left in the pipe")
        var received: [UInt8] = []
        for _ in 0..<2000 where received.count < wanted {
            _ = try? flow.pump(from: source.relay, to: destination.relay, pool: pool, readSource: true)
            received += receive(destination.peer, 1)
        }
        #expect(received == sent)
    }

    /// What the destination does not take stays with the flow, in order, and
    /// leaves the loop's buffer free for the next flow.
    @Test func aPartialSendKeepsTheRestInOrder() {
        let pool = PipePool()
        let source = tcpPair()
        let destination = tcpPair()
        defer { for fd in [source.peer, source.relay, destination.peer, destination.relay] { close(fd) } }
        setOption(destination.relay, SOL_SOCKET, SO_SNDBUF, 4096)
        setOption(destination.peer, SOL_SOCKET, SO_RCVBUF, 4096)
        var flow = Flow()
        var sent: [UInt8] = []
        for index in 0..<40 {
            let message = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &+ index) }
            _ = message.withUnsafeBytes { Glibc.send(source.peer, $0.baseAddress, $0.count, 0) }
            sent += message
            _ = try? flow.pump(from: source.relay, to: destination.relay, pool: pool, readSource: true)
        }
        #expect(flow.pending > 0, "the destination took everything; the case tests nothing")
        var received: [UInt8] = []
        for _ in 0..<2000 where received.count < sent.count {
            _ = try? flow.pump(from: source.relay, to: destination.relay, pool: pool, readSource: true)
            received += receive(destination.peer, 1)
        }
        #expect(received == sent)
    }
}
