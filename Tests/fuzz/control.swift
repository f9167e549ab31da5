// libFuzzer target for the control-socket request parser. Built and run by
// Tests/fuzz/build.sh and `make fuzz`; not part of the SwiftPM package.

import ReaperCore

/// Feeds one input to `ControlRequest.parse`, which promises never to trap whatever the bytes.
///
/// The server hands the parser a slice of its read buffer, so the same bytes are also parsed
/// from a slice that does not start at index 0; both answers must agree. An accepted request
/// is short and valid UTF-8; a refused one explains itself, and for a line without a newline
/// (all the server ever passes) the explanation fits on the single `ERR` line of the reply.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzControlRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let result = ControlRequest.parse(bytes)
    let buffer = [UInt8(ascii: "\n")] + bytes
    precondition(ControlRequest.parse(buffer[1...]) == result, "a slice of the same bytes parses differently")
    switch result {
    case .success:
        precondition(bytes.count <= ControlRequest.maximumLength, "accepted a request of \(bytes.count) bytes")
        precondition(String(validating: bytes, as: UTF8.self) != nil, "accepted a request that is not UTF-8")
    case .failure(let error):
        precondition(!error.message.isEmpty, "refused a request without a message")
        if !bytes.contains(UInt8(ascii: "\n")) {
            let reply = ControlResponse.error(error.message)
            precondition(
                reply.firstIndex(of: UInt8(ascii: "\n")) == reply.count - 1, "the ERR reply spans several lines")
        }
    }
    return 0
}
