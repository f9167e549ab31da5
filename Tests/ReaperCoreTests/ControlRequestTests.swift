import Testing

@testable import ReaperCore

@Suite struct ControlRequestTests {
    func parse(_ text: String) -> Result<ControlRequest, ControlRequestError> {
        ControlRequest.parse(Array(text.utf8))
    }

    @Test func wellFormedRequests() throws {
        #expect(try parse("status").get() == .status(json: false))
        #expect(try parse("status --json").get() == .status(json: true))
        #expect(try parse("connections").get() == .connections(listener: nil, json: false))
        #expect(try parse("connections --listener pg --json").get() == .connections(listener: "pg", json: true))
        #expect(try parse("connections --json --listener pg").get() == .connections(listener: "pg", json: true))
        #expect(try parse("reap 42").get() == .reap(id: 42))
        #expect(try parse("reload\r").get() == .reload)
    }

    @Test(arguments: [
        "", "   ", "bogus", "status extra", "connections --listener", "connections pg", "reap", "reap x", "reap -1",
        "reap 1 2", "reload now",
    ])
    func malformedRequestsAreErrors(_ text: String) {
        guard case .failure(let error) = parse(text) else {
            Issue.record("'\(text)' was accepted")
            return
        }
        #expect(!error.message.isEmpty)
    }

    @Test func hostileBytesAreErrors() {
        #expect((try? ControlRequest.parse([0xFF, 0xFE, 0x00]).get()) == nil)
        #expect((try? ControlRequest.parse([UInt8](repeating: 0x61, count: 5000)).get()) == nil)
    }

    @Test func framing() {
        #expect(ControlResponse.ok("body\n") == Array("OK\nbody\n".utf8))
        #expect(ControlResponse.error("no") == Array("ERR no\n".utf8))
    }
}
