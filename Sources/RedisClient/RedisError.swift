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
    /// Refused without being run: too many calls wait for this connection, Redis has not
    /// answered the batch on the wire for a while, or a cluster kept redirecting or refusing it
    /// (a slot being moved, a primary being elected). Nothing ran; retrying later is safe.
    case overloaded
    /// The connection's AUTH or SELECT was refused; nothing queued on it ran.
    case handshakeFailed(String)
    /// The command ran and changed state, but the `WAIT` after its batch did not count
    /// `REDIS_WAIT_REPLICAS` replicas within `REDIS_WAIT_TIMEOUT_MS`: the change is on the
    /// primary only, and is lost if the primary dies now. Retrying with the same idempotency
    /// (an Idempotency-Key, an event id) answers it once it is replicated.
    case notReplicated

    public var description: String {
        switch self {
        case .server(let message): return "redis error reply: \(message)"
        case .connectFailed(let host, let port, let reason): return "cannot connect to redis at \(host):\(port): \(reason)"
        case .connectionClosed: return "redis connection closed with the command in flight"
        case .timeout: return "redis command timed out"
        case .protocolError(let message): return "redis protocol error: \(message)"
        case .invalidURL(let reason): return "invalid REDIS_URL: \(reason)"
        case .shutdown: return "redis client is shut down"
        case .overloaded: return "redis is overloaded or slow; the call was not sent"
        case .handshakeFailed(let reason): return "redis refused the connection's handshake: \(reason)"
        case .notReplicated: return "redis applied the command, but too few replicas acknowledged it in time"
        }
    }

    /// Error replies that mean "not now" rather than "wrong": out of memory, loading its data,
    /// busy with a script, a replica or cluster not ready. A client should retry later.
    public var isTransient: Bool {
        switch self {
        case .connectFailed, .connectionClosed, .timeout, .overloaded, .handshakeFailed, .shutdown, .notReplicated:
            return true
        case .server:
            switch serverCode {
            case "OOM", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "NOREPLICAS", "MISCONF", "NOPERM":
                return true
            default:
                return false
            }
        case .protocolError, .invalidURL:
            return false
        }
    }

    /// The error reply's leading code, e.g. `NOSCRIPT` or `WRONGTYPE`.
    public var serverCode: Substring? {
        guard case .server(let message) = self else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }
}
