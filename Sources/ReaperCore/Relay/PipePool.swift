/// One kernel pipe used to splice bytes between two sockets.
final class RelayPipe {
    let reader: FileDescriptor
    let writer: FileDescriptor
    let capacity: Int

    init(_ ends: consuming Pipes.Ends, capacity: Int) {
        let granted = Pipes.setCapacity(ends.writer.raw, bytes: capacity)
        self.capacity = granted
        reader = ends.reader
        writer = ends.writer
    }
}

/// Pipes shared by all connections. A connection borrows one only while bytes
/// are moving through it and returns it empty, so an idle connection owns no pipe
/// and no extra descriptors (socket-proxyd allocates lazily; HAProxy pools).
///
/// It also holds the loop's one copy buffer: a flow that copies reads into it
/// and writes straight on, so a small message costs read(2) + send(2) and no
/// allocation. One loop thread, one pump at a time: nothing else touches it
/// between that read and that write.
final class PipePool {
    /// `Flow.copyBufferSize` bytes, for the life of the pool.
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Flow.copyBufferSize, alignment: 64)

    private var idle: [RelayPipe] = []
    private let keepIdle: Int
    let pipeCapacity: Int
    private(set) var created = 0
    private(set) var inUse = 0

    /// Pipes lent out at most at once; past it flows copy through a buffer.
    /// Each pipe costs two descriptors; 0 turns splicing off.
    private let maxInUse: Int

    init(pipeCapacity: Int = 256 * 1024, keepIdle: Int = 64, maxInUse: Int = .max) {
        self.pipeCapacity = pipeCapacity
        self.keepIdle = keepIdle
        self.maxInUse = maxInUse
    }

    /// An empty pipe; nil when the kernel will not make one (descriptors
    /// exhausted) or `maxInUse` are lent out.
    func take() -> RelayPipe? {
        guard inUse < maxInUse else { return nil }
        if let pipe = idle.popLast() {
            inUse += 1
            return pipe
        }
        guard let ends = try? Pipes.make() else { return nil }
        created += 1
        inUse += 1
        return RelayPipe(ends, capacity: pipeCapacity)
    }

    /// Returns a pipe. Only an empty one can be reused; one still holding bytes
    /// of a closed connection is closed with them.
    func give(_ pipe: RelayPipe, empty: Bool) {
        inUse -= 1
        if empty && idle.count < keepIdle { idle.append(pipe) }
    }

    var idleCount: Int { idle.count }

    deinit { scratch.deallocate() }
}
