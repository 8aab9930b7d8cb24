/// Every failure of the Redis layer. Descriptions never include passwords or command arguments.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Redis answered with an error reply (`-ERR ...`, `-NOSCRIPT ...`, `-WRONGTYPE ...`).
    case server(String)
    /// The TCP connection could not be made within the connect timeout, or was refused.
    case connectFailed(host: String, port: Int, reason: String)
    /// The connection dropped while the command was in flight; whether it ran is unknown.
    case connectionClosed
    /// No reply arrived within the command timeout; the connection was reset.
    case timeout
    /// The bytes from the server were not valid RESP.
    case protocolError(String)
    /// `REDIS_URL` could not be understood.
    case invalidURL(String)
    /// The client was shut down.
    case shutdown

    public var description: String {
        switch self {
        case .server(let message): return "redis error reply: \(message)"
        case .connectFailed(let host, let port, let reason): return "cannot connect to redis at \(host):\(port): \(reason)"
        case .connectionClosed: return "redis connection closed with the command in flight"
        case .timeout: return "redis command timed out"
        case .protocolError(let message): return "redis protocol error: \(message)"
        case .invalidURL(let reason): return "invalid REDIS_URL: \(reason)"
        case .shutdown: return "redis client is shut down"
        }
    }

    /// The error reply's leading code, e.g. `NOSCRIPT` or `WRONGTYPE`.
    public var serverCode: Substring? {
        guard case .server(let message) = self else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }
}
