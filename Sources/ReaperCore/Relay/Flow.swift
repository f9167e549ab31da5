/// Bytes moving one way: from a source socket to a destination socket.
///
/// Bytes go through a pooled pipe with splice(2); if no pipe can be had or the
/// socket type cannot splice, through a small heap buffer instead. Either way at
/// most `capacity` bytes wait here, which is the backpressure: while they wait,
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
    /// Bytes delivered to the destination.
    var bytes: UInt64 = 0

    static let copyBufferSize = 16 * 1024

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
        // Bounded so one fast stream cannot starve the other connections.
        for _ in 0..<8 {
            var progressed = false
            if pending > 0 {
                let written = try drain(to: destination)
                if written > 0 {
                    delivered += written
                    progressed = true
                }
            }
            let room = room(pool)
            if mayRead && !sourceClosed && room > 0 {
                let read = try fill(from: source, pool: pool)
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
        }
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
                pool.give(pipe, empty: true)
                store = .empty
                return try fill(from: source, pool: pool)
            } catch {
                throw .source(error)
            }
            return account(result)
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
