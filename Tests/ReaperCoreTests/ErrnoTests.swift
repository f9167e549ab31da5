import Glibc
import Testing

@testable import ReaperCore

@Suite struct ErrnoTests {
    /// How a failed accept(2) is treated (Daemon+Accept): memory pressure and
    /// descriptor exhaustion leave the client queued, so they must not count as
    /// "accept again at once", which would spin on the still-readable socket.
    @Test func acceptFailureClasses() {
        for code in [ENOMEM, ENOBUFS] {
            #expect(Errno(code).isMemoryPressure)
            #expect(!Errno(code).isAcceptAgain)
        }
        for code in [EMFILE, ENFILE] {
            #expect(Errno(code).isDescriptorExhaustion)
            #expect(!Errno(code).isMemoryPressure)
        }
        for code in [ECONNABORTED, EPERM, EPROTO, EINTR, EAGAIN] {
            #expect(Errno(code).isAcceptAgain)
        }
        // A listening socket that no longer listens: that endpoint's own failure.
        for code in [EINVAL, ENOTSOCK, EOPNOTSUPP] {
            #expect(!Errno(code).isAcceptAgain && !Errno(code).isMemoryPressure && !Errno(code).isDescriptorExhaustion)
        }
    }
}
