/// Takes a PROXY protocol header off a client socket, and not one byte more:
/// the bytes after it are the client's and go to the upstream untouched.
///
/// Each step peeks at what is queued, asks `ProxyHeader.parse`, and consumes
/// only bytes the header is known to span: the whole header once it is
/// complete, or everything seen while it is still incomplete (every one of
/// those bytes belongs to it). Consuming them matters: bytes left queued keep
/// a level-triggered socket readable, and the loop would spin on them.
struct ProxyHeaderReader {
    /// The header's bytes consumed so far.
    private(set) var received: [UInt8] = []

    enum Step {
        /// More of the header is still to come.
        case waiting
        case done(ProxyHeader)
        /// Not a valid header (or the client stopped half-way through one).
        case refused(String)
        /// The client closed, or reset, before sending anything.
        case closed
    }

    mutating func step(_ fd: Int32) -> Step {
        var scratch = [UInt8](repeating: 0, count: ProxyHeader.maxVersion2Length)
        // Each round consumes at least one byte or returns; the header's limit bounds the rounds.
        while true {
            let room = ProxyHeader.maxVersion2Length - received.count
            let result: Result<IOResult<Int>, SystemError> = scratch.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) in
                    try Sockets.peek(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<room]))
                }
            }
            let peeked: Int
            switch result {
            case .success(.processed(let count)): peeked = count
            case .success(.wouldBlock): return .waiting
            case .failure(let error):
                return received.isEmpty
                    ? .closed : .refused("\(error.errno) after \(received.count) bytes of its PROXY header")
            }
            guard peeked > 0 else {
                return received.isEmpty
                    ? .closed : .refused("the client closed after \(received.count) bytes of its PROXY header")
            }
            switch ProxyHeader.parse(received[...] + scratch[0..<peeked]) {
            case .complete(let header, let length):
                guard consume(fd, length - received.count, into: &scratch) else {
                    return .refused("the queued PROXY header could not be read")
                }
                return .done(header)
            case .incomplete:
                guard consume(fd, peeked, into: &scratch) else {
                    return .refused("the queued PROXY header could not be read")
                }
            case .invalid(let why):
                return .refused(why)
            }
        }
    }

    /// Reads exactly `count` bytes that a peek has just seen queued.
    private mutating func consume(_ fd: Int32, _ count: Int, into scratch: inout [UInt8]) -> Bool {
        guard count > 0 else { return true }
        let read = try? scratch.withUnsafeMutableBytes { raw throws(SystemError) in
            try Sockets.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]))
        }
        guard case .processed(let got)? = read, got == count else { return false }
        received += scratch[0..<count]
        return true
    }
}
