import Testing

@testable import ReaperCore

/// Names of descriptors in systemd's store: what this reaperd writes reads back
/// the same, older names still read, and nothing a store can hand back traps.
@Suite struct StoredNameTests {
    @Test func namesRoundTrip() {
        for name in [
            StoredName.client(id: 7, listener: "pg", acceptedAtMilliseconds: 123_456),
            .client(id: 8, listener: "pg", acceptedAtMilliseconds: nil), .upstream(id: 7, listener: "pg"),
            .connection(id: 9), .connection(id: 36), .connection(id: UInt64.max - 1), .ledger,
        ] {
            #expect(StoredName(parsing: name.text) == name, "\(name.text)")
        }
        #expect(StoredName.client(id: 7, listener: "pg", acceptedAtMilliseconds: 5).text == "c@7@pg@5")
        #expect(StoredName.connection(id: 36).text == "@10")
        #expect(StoredName.connection(id: 1_000_000_000).text == "@gjdgxs")
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
            "c@@pg", "c@1@", "u@1@pg@3", "l@", "c@1@pg@2@3", "@", "@0", "@A", "@1-", "@1@2",
            "@3w5e11264sgsf", "@zzzzzzzzzzzzzz",
        ] {
            #expect(StoredName(parsing: text) == nil, "\(text)")
            #expect(StoredName.isReaperds(text), "\(text)")
        }
        #expect(StoredName(parsing: "c@18446744073709551614@pg") != nil)
        #expect(StoredName(parsing: "@3w5e11264sgse") == .connection(id: UInt64.max - 1))
        #expect(!StoredName.isReaperds("pg"))
        #expect(!StoredName.isReaperds("web-1"))
    }
}
