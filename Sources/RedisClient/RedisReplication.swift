/// What a command does to the data, for `REDIS_WAIT_REPLICAS` (`RedisConfiguration.waitReplicas`):
/// whether its batch must be followed by `WAIT`, and whether its reply waits for that `WAIT`.
///
/// With `waitReplicas` ≥ 1, a batch that holds a command that may change state is followed, on
/// the same connection, by one `WAIT n timeout`; the reply of each such command that did change
/// state (or that states something a client will rely on, such as a replayed grant) is held
/// until the `WAIT` answers, and is then handed over as it is when at least n replicas have the
/// batch, or as `RedisError.notReplicated` when they do not. Reads, error replies and replies
/// that changed nothing are handed over at once. With `waitReplicas` 0 this changes nothing.
public enum RedisReplication: Sendable {
    /// Changes nothing (a read): never followed by `WAIT`, never held.
    case none
    /// May change state: its batch is followed by `WAIT`; every reply but an error reply is held.
    case always
    /// May change state; its reply says whether it did: held only when `changed` says so.
    case when(_ changed: @Sendable (RedisValue) -> Bool)

    var mayWrite: Bool {
        if case .none = self { return false }
        return true
    }

    /// Whether this (non-error) reply waits for the batch's `WAIT`.
    func holds(_ reply: RedisValue) -> Bool {
        switch self {
        case .none: return false
        case .always: return true
        case .when(let changed): return changed(reply)
        }
    }
}

/// `WAIT`'s reply, read defensively: only an integer reply of at least `replicas` is a yes (an
/// error reply, another type, or a number too large for `Int` are all a no; nothing traps).
enum ReplicationWaitReply {
    static func replicated(_ reply: RedisValue, replicas: Int) -> Bool {
        guard case .integer(let acknowledged) = reply else { return false }
        return acknowledged >= Int64(replicas)
    }
}
