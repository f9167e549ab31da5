internal import Glibc

/// An open descriptor that reaperd owns. It is closed exactly once: by
/// `close()` or, if the owner is dropped, by `deinit` (systemd's `_cleanup_close_`).
/// There is no `-1` sentinel above this layer: a side that is gone is `nil`.
public struct FileDescriptor: ~Copyable {
    /// The kernel's number, for calls and for epoll; never close it directly.
    public let raw: Int32

    /// Takes ownership of `raw`.
    public init(owning raw: Int32) {
        precondition(raw >= 0, "negative descriptor")
        self.raw = raw
    }

    deinit { Glibc.close(raw) }

    /// Closes now. The corresponding C function is `close`; its error is ignored
    /// because on Linux the descriptor is released even when close reports one.
    public consuming func close() {
        Glibc.close(raw)
        discard self
    }

    /// Gives up ownership without closing, e.g. when handing the descriptor to
    /// systemd or to another process.
    public consuming func release() -> Int32 {
        let value = raw
        discard self
        return value
    }
}
