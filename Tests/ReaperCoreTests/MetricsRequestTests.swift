import Testing

@testable import ReaperCore

@Suite struct MetricsRequestTests {
    func judge(_ text: String, complete: Bool = false) -> MetricsRequest.Verdict {
        MetricsRequest.judge(Array(text.utf8), complete: complete)
    }

    @Test func getMetrics() {
        #expect(judge("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == .metrics(headOnly: false))
        #expect(judge("GET /metrics?x=1 HTTP/1.0\n\n") == .metrics(headOnly: false))
        #expect(judge("HEAD /metrics HTTP/1.1\r\n\r\n") == .metrics(headOnly: true))
    }

    @Test func errors() {
        #expect(judge("POST /metrics HTTP/1.1\r\n\r\n") == .error(status: 405, reason: "Method Not Allowed"))
        #expect(judge("GET / HTTP/1.1\r\n\r\n") == .error(status: 404, reason: "Not Found"))
        #expect(judge("garbage\r\n\r\n") == .error(status: 400, reason: "Bad Request"))
        #expect(judge("GET /metrics HTTP/1.1\r\n", complete: true) == .error(status: 400, reason: "Bad Request"))
        let huge = "GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 9000)
        #expect(judge(huge) == .error(status: 431, reason: "Request Header Fields Too Large"))
    }

    @Test func incompleteWaits() {
        #expect(judge("GET /metrics HTTP/1.1\r\n") == .needMore)
        #expect(judge("") == .needMore)
    }

    @Test func responseCarriesLength() {
        let bytes = MetricsRequest.response(status: 200, reason: "OK", contentType: "text/plain", body: "abc")
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("Content-Length: 3\r\n"))
        #expect(text.hasSuffix("\r\n\r\nabc"))
    }
}
