/// Bytes moving one way: from a source socket to a destination socket.
///
/// Each flow chooses how from what it has moved, as HAProxy's `splice-auto`
/// does. It starts copying: read(2) into the loop's copy buffer and send(2)
/// straight on, two system calls and no allocation per small message, which
/// is what request/response traffic sends. A flow whose reads keep filling
/// that buffer is a stream, and splices through a pooled pipe instead, so bulk
/// bytes never cross into user space; when its reads turn small again it goes
/// back to copying. What the destination does not take at once waits in a
/// heap buffer (copying) or the pipe (splicing). Either way at most a pipe's
/// or a buffer's worth waits here, which is the backpressure: while it waits,
/// the source is not read.
struct Flow {
    enum Store {
        case empty
        case pipe(RelayPipe)
        case buffer([UInt8], start: Int)
    }

    /// Why a pump stopped early: the side that failed, and how.
    enum Failure: Error {
        case source(SystemError)
        case destination(SystemError)

        var isSource: Bool { if case .source = self { true } else { false } }

        var systemError: SystemError {
            switch self {
            case .source(let error), .destination(let error): error
            }
        }
    }

    var store: Store = .empty
    /// Bytes read from the source and not yet written to the destination.
    var pending = 0
    /// The source sent FIN (read returned 0), or can send nothing more.
    var sourceClosed = false
    /// The source ended with a reset, not a FIN: once its bytes are delivered
    /// the connection resets the destination too, so the far peer learns the
    /// stream broke instead of reading a clean, short end.
    var resetAtEnd = false
    /// Nothing more moves this way: the FIN was passed on (shutdown(SHUT_WR) on
    /// the destination), or the source's reset is to be, or the destination is gone.
    var finished = false
    /// splice is not supported between these sockets: copy instead.
    var copyOnly = false
    /// Moving bytes through a pipe (a stream), not the copy buffer.
    private(set) var splicing = false
    /// Reads in a row that filled the copy buffer (while copying), or that
    /// moved less than it (while splicing): the evidence for a change of mode.
    private var streak: UInt8 = 0
    /// Full copy-buffer reads in a row that make a flow splice.
    static let fullReadsToSplice: UInt8 = 2
    /// Splices in a row under `copyBufferSize` that make it copy again.
    static let smallSplicesToCopy: UInt8 = 4
    /// Bytes delivered to the destination.
    var bytes: UInt64 = 0

    static let copyBufferSize = 16 * 1024
    /// Rounds of write-then-read one pump makes at most.
    static let roundsPerPump = 8

    /// A read would-blocked while bytes were waiting: the pipe may be full (its
    /// slots count pages, not bytes) rather than the socket empty. Reading waits
    /// until the destination takes something, or a level-triggered readable
    /// socket would spin the loop.
    var readPaused = false

    /// Room for more bytes before the source must wait.
    func room(_ pool: PipePool) -> Int {
        switch store {
        case .empty: pool.pipeCapacity
        case .pipe(let pipe): pipe.capacity - pending
        case .buffer(let buffer, _): buffer.count - pending
        }
    }

    /// Whether the source should be watched for reading.
    func wantsRead(_ pool: PipePool) -> Bool { !sourceClosed && !readPaused && room(pool) > 0 }

    /// Whether the destination should be watched for writing.
    var wantsWrite: Bool { pending > 0 }

    var isDone: Bool { finished }

    /// Moves what can move now without blocking. Returns the bytes delivered.
    ///
    /// `lastDirection`: the other direction is finished already, so the connection
    /// closes as soon as this one is, and close(2) sends the FIN: no shutdown call.
    mutating func pump(
        from source: Int32, to destination: Int32, pool: PipePool, readSource: Bool, lastDirection: Bool = false
    ) throws(Failure) -> Int {
        var delivered = 0
        var mayRead = readSource
        var cutShort = true
        // Bounded so one fast stream cannot starve the other connections.
        for _ in 0..<Self.roundsPerPump {
            cutShort = false
            var progressed = false
            if pending > 0 {
                let written = try drain(to: destination)
                if written > 0 {
                    delivered += written
                    progressed = true
                }
            }
            var room = room(pool)
            if mayRead && !sourceClosed && room > 0 {
                let read: Int
                if pending == 0 && !splicing, case .empty = store {
                    room = pool.scratch.count
                    let moved = try copyThrough(from: source, to: destination, pool: pool)
                    read = moved.read
                    delivered += moved.written
                } else {
                    read = try fill(from: source, pool: pool)
                }
                if read > 0 {
                    progressed = true
                    // Less than there was room for: the socket is most likely empty,
                    // and another read would only say so. Epoll reports more data.
                    if read < room { mayRead = false }
                } else {
                    mayRead = false
                    if pending > 0 && !sourceClosed { readPaused = true }
                }
            }
            if !progressed { break }
            cutShort = true
        }
        // The bound ended a round that read into the store: pass those bytes on
        // now. Left waiting, they would take the source out of the epoll set and
        // put the destination in, and the next wake-up would only write them and
        // swap both back (four epoll_ctl and a wake-up per pipeful of a stream).
        if cutShort && pending > 0 { delivered += try drain(to: destination) }
        releaseIfEmpty(pool)
        if sourceClosed && pending == 0 && !finished {
            finished = true
            if lastDirection || resetAtEnd { return delivered }
            do {
                try Sockets.shutdownWrite(destination)
            } catch {
                throw .destination(error)
            }
        }
        return delivered
    }

    /// The copy path, with nothing pending: one read into the loop's buffer,
    /// one send of what it read. What the destination does not take moves to a
    /// buffer of this flow's own, before any error is reported, so no byte read
    /// is lost to the next flow that uses the loop's buffer.
    private mutating func copyThrough(from source: Int32, to destination: Int32, pool: PipePool) throws(Failure) -> (
        read: Int, written: Int
    ) {
        let scratch = pool.scratch
        let result: IOResult<Int>
        do {
            result = try Sockets.read(source, into: scratch)
        } catch {
            throw .source(error)
        }
        let count = account(result)  // now pending
        guard count > 0 else { return (0, 0) }
        if count == scratch.count {
            streak += 1
            if streak >= Self.fullReadsToSplice && !copyOnly {
                splicing = true
                streak = 0
            }
        } else {
            streak = 0
        }
        var written = 0
        var failure: SystemError?
        do {
            if case .processed(let sent) = try Sockets.write(
                destination, from: UnsafeRawBufferPointer(rebasing: scratch[0..<count]))
            {
                written = sent
            }
        } catch {
            failure = error
        }
        bytes += UInt64(written)
        pending -= written
        if pending > 0 {
            var rest = [UInt8](repeating: 0, count: Self.copyBufferSize)
            rest.withUnsafeMutableBytes { raw in
                raw.baseAddress!.copyMemory(from: scratch.baseAddress! + written, byteCount: count - written)
            }
            store = .buffer(rest, start: 0)
        }
        if let failure { throw .destination(failure) }
        return (count, written)
    }

    /// Reads into the store; returns bytes read, 0 on would-block or EOF.
    private mutating func fill(from source: Int32, pool: PipePool) throws(Failure) -> Int {
        if case .empty = store {
            if !copyOnly, let pipe = pool.take() {
                store = .pipe(pipe)
            } else {
                store = .buffer([UInt8](repeating: 0, count: Self.copyBufferSize), start: 0)
            }
        }
        switch store {
        case .empty:
            return 0
        case .pipe(let pipe):
            let result: IOResult<Int>
            do {
                result = try Pipes.splice(from: source, to: pipe.writer.raw, count: pipe.capacity - pending)
            } catch  where error.errno == .invalid && pending == 0 {
                // This socket type cannot splice (seen with some AF_UNIX setups): copy.
                copyOnly = true
                splicing = false
                pool.give(pipe, empty: true)
                store = .empty
                return try fill(from: source, pool: pool)
            } catch {
                throw .source(error)
            }
            let count = account(result)
            if count > 0 { noteSplice(count) }
            return count
        case .buffer(var buffer, let start):
            store = .empty  // keep the array uniquely referenced while writing into it
            var start = start
            if start + pending == buffer.count && start > 0 {
                buffer.withUnsafeMutableBytes { raw in
                    raw.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: pending)
                }
                start = 0
            }
            let end = start + pending
            if end == buffer.count {
                store = .buffer(buffer, start: start)
                return 0
            }
            let outcome = buffer.withUnsafeMutableBytes { raw in
                Result { () throws(SystemError) -> IOResult<Int> in
                    try Sockets.read(source, into: UnsafeMutableRawBufferPointer(rebasing: raw[end...]))
                }
            }
            store = .buffer(buffer, start: start)
            switch outcome {
            case .success(let result): return account(result)
            case .failure(let error): throw .source(error)
            }
        }
    }

    /// A splice that moved less than the copy buffer holds is a small message
    /// paying for a pipe; enough of them in a row and the flow copies again
    /// (once its pipe is empty).
    private mutating func noteSplice(_ count: Int) {
        if count >= Self.copyBufferSize {
            streak = 0
            return
        }
        streak += 1
        if streak >= Self.smallSplicesToCopy {
            splicing = false
            streak = 0
        }
    }

    private mutating func account(_ result: IOResult<Int>) -> Int {
        switch result {
        case .wouldBlock:
            return 0
        case .processed(0):
            sourceClosed = true
            return 0
        case .processed(let count):
            pending += count
            return count
        }
    }

    /// Writes pending bytes to the destination; returns bytes written.
    private mutating func drain(to destination: Int32) throws(Failure) -> Int {
        let result: IOResult<Int>
        switch store {
        case .empty:
            return 0
        case .pipe(let pipe):
            do {
                result = try Pipes.splice(from: pipe.reader.raw, to: destination, count: pending)
            } catch {
                throw .destination(error)
            }
            guard case .processed(let count) = result else { return 0 }
            pending -= count
            bytes += UInt64(count)
            if count > 0 { readPaused = false }
            return count
        case .buffer(let buffer, let start):
            let outcome = buffer.withUnsafeBytes { raw in
                Result { () throws(SystemError) -> IOResult<Int> in
                    try Sockets.write(destination, from: UnsafeRawBufferPointer(rebasing: raw[start..<start + pending]))
                }
            }
            switch outcome {
            case .success(let value): result = value
            case .failure(let error): throw .destination(error)
            }
            guard case .processed(let count) = result else { return 0 }
            pending -= count
            bytes += UInt64(count)
            if count > 0 { readPaused = false }
            store = .buffer(buffer, start: pending == 0 ? 0 : start + count)
            return count
        }
    }

    /// An empty flow holds nothing: the pipe goes back, the buffer is freed.
    private mutating func releaseIfEmpty(_ pool: PipePool) {
        guard pending == 0 else { return }
        if case .pipe(let pipe) = store { pool.give(pipe, empty: true) }
        store = .empty
    }

    /// The source can send nothing more: a read failed after returning every
    /// byte queued before the failure (Linux returns queued data before the error).
    mutating func endSource(reset: Bool) {
        sourceClosed = true
        if reset { resetAtEnd = true }
    }

    /// The destination is gone (reset, broken pipe): what waits for it can never
    /// be delivered, so it is dropped and nothing more is read for it.
    mutating func abandon(_ pool: PipePool) {
        release(pool)
        pending = 0
        readPaused = false
        sourceClosed = true
        finished = true
    }

    /// At connection end: a pipe still holding bytes is closed, not reused.
    mutating func release(_ pool: PipePool) {
        if case .pipe(let pipe) = store { pool.give(pipe, empty: pending == 0) }
        store = .empty
    }
}
