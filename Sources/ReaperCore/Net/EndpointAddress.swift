extension Endpoint {
    /// The kernel form of this endpoint. Endpoints are validated when parsed, so
    /// a failure here means a parser bug.
    public var socketAddress: SocketAddress {
        let address: SocketAddress?
        switch self {
        case .ipv4(let ip, let port), .ipv6(let ip, let port): address = SocketAddress(ip: ip, port: port)
        case .unix(let path): address = SocketAddress(unixPath: path)
        }
        guard let address else { preconditionFailure("endpoint \(self) passed validation but has no socket address") }
        return address
    }
}
