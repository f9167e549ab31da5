import Testing

@testable import ReaperCore

@Suite struct FDStoreConfigTests {
    @Test func fdStoreKey() throws {
        for mode in FDStoreMode.allCases {
            let configuration = try Configuration.parse(
                "[daemon]\nfd_store = \(mode.rawValue)\n" + ConfigFixture.echoListener, file: "t.conf")
            #expect(configuration.daemon.fdStore == mode)
        }
        #expect(Configuration.embeddedDefault.daemon.fdStore == .auto)
        let diagnostic = try #require(
            ConfigFixture.onlyDiagnostic("[daemon]\nfd_store = maybe\n" + ConfigFixture.echoListener))
        #expect(diagnostic.line == 2)
        #expect(diagnostic.message.contains("fd_store"))
    }

    @Test func storedNamesRoundTrip() {
        #expect(
            StoredName(parsing: StoredName.client(id: 17, listener: "pg-1", acceptedAtMilliseconds: nil).text)
                .map(\.text) == "c@17@pg-1")
        #expect(StoredName(parsing: "u@3@db").map(\.text) == "u@3@db")
        #expect(StoredName.listener("pg", address: "[::]:6432") == "l@pg@[__]_6432")
        if case .listener(let name) = StoredName(parsing: "l@pg@127.0.0.1_6432") {
            #expect(name == "pg")
        } else {
            Issue.record("listener name not parsed")
        }
        // A socket unit's own names are not reaperd's.
        #expect(StoredName(parsing: "pg") == nil)
        #expect(StoredName(parsing: "c@x@pg") == nil)
        #expect(StoredName(parsing: "c@1@") == nil)
    }
}
