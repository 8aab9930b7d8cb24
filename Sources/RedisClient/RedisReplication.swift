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
    /// A reply of several answers (a coalesced script call), some of which may have changed
    /// state: held when `changed` says so, like `when`; but when too few replicas acknowledge, it
    /// is handed over as `unreplicated(reply)` instead of `RedisError.notReplicated`: the reply
    /// with the answers that changed state marked (each caller fails only those), so an answer
    /// that changed nothing is not failed for a change it shared a call with.
    case split(_ changed: @Sendable (RedisValue) -> Bool, unreplicated: @Sendable (RedisValue) -> RedisValue)

    var mayWrite: Bool {
        if case .none = self { return false }
        return true
    }

    /// Whether this (non-error) reply waits for the batch's `WAIT`.
    func holds(_ reply: RedisValue) -> Bool {
        switch self {
        case .none: return false
        case .always: return true
        case .when(let changed), .split(let changed, _): return changed(reply)
        }
    }

    /// What a held reply is handed over as when its batch's `WAIT` counted too few replicas.
    func unreplicated(_ reply: RedisValue) -> Result<RedisValue, RedisError> {
        if case .split(_, let unreplicated) = self { return .success(unreplicated(reply)) }
        return .failure(.notReplicated)
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
