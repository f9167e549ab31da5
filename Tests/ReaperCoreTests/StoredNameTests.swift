import Testing

@testable import ReaperCore

/// Names of descriptors in systemd's store: what this reaperd writes reads back
/// the same, older names still read, and nothing a store can hand back traps.
@Suite struct StoredNameTests {
    @Test func namesRoundTrip() {
        for name in [
            StoredName.client(id: 7, listener: "pg", acceptedAtMilliseconds: 123_456),
            .client(id: 8, listener: "pg", acceptedAtMilliseconds: nil), .upstream(id: 7, listener: "pg"),
            .connection(id: 9, listener: "pg-1", acceptedAtMilliseconds: 77, client: .init(local: 6432, peer: 50123)),
        ] {
            #expect(StoredName(parsing: name.text) == name, "\(name.text)")
        }
        #expect(StoredName.client(id: 7, listener: "pg", acceptedAtMilliseconds: 5).text == "c@7@pg@5")
        #expect(
            StoredName.connection(id: 3, listener: "pg", acceptedAtMilliseconds: 5, client: .init(local: 1, peer: 2))
                .text == "p@3@pg@5@1@2")
    }

    /// A name from before the accept time travelled with it: three parts.
    @Test func olderClientNamesStillRead() {
        #expect(StoredName(parsing: "c@42@pg") == .client(id: 42, listener: "pg", acceptedAtMilliseconds: nil))
    }

    /// `id + 1` of UInt64.max trapped at start, so a crash loop; an id past
    /// UInt64 did not parse and failed start as an unknown socket unit name.
    /// Both are now unreadable names of reaperd's: dropped, never a failure.
    @Test func overflowingAndGarbledNamesAreReaperdsButUnreadable() {
        for text in [
            "c@18446744073709551615@pg", "c@18446744073709551616@pg", "u@18446744073709551615@pg", "c@1@pg@x",
            "c@@pg", "c@1@", "u@1@pg@3", "l@", "c@1@pg@2@3", "p@1@pg@2@3", "p@1@pg@2@3@65536",
            "p@18446744073709551615@pg@1@2@3", "p@1@@1@2@3", "p@1@pg@x@2@3", "p@1@pg@1@2@3@4",
        ] {
            #expect(StoredName(parsing: text) == nil, "\(text)")
            #expect(StoredName.isReaperds(text), "\(text)")
        }
        #expect(StoredName(parsing: "c@18446744073709551614@pg") != nil)
        #expect(StoredName(parsing: "p@18446744073709551614@pg@0@0@0") != nil)
        #expect(!StoredName.isReaperds("pg"))
        #expect(!StoredName.isReaperds("web-1"))
    }
}
