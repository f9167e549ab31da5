// libFuzzer target for the metrics port's HTTP request parser. Built and run by
// Tests/fuzz/build.sh and `make fuzz`; not part of the SwiftPM package.

import ReaperCore

/// Feeds one input to `MetricsRequest.judge`, first as bytes still arriving, then as a
/// request that ended (EOF or the size limit).
///
/// A request that ended always gets an answer, never `needMore` (SPEC §8: garbage gets a
/// clear error); a verdict reached before the end does not change when the end comes; an
/// error carries one of the statuses the server sends, with its reason phrase.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMetricsRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let arriving = MetricsRequest.judge(bytes, complete: false)
    let ended = MetricsRequest.judge(bytes, complete: true)
    precondition(ended != .needMore, "a request that ended got no answer")
    if arriving != .needMore {
        precondition(arriving == ended, "verdict \(arriving) became \(ended) at the end of the request")
    }
    if case .error(let status, let reason) = ended {
        precondition([400, 404, 405, 431].contains(status), "unexpected status \(status)")
        precondition(!reason.isEmpty, "status \(status) without a reason phrase")
    }
    return 0
}
