import NIOCore
import Synchronization

/// Remembers, for a few milliseconds, that a basket answered sold_out, so a stampede on a sold-out
/// basket is refused without a Redis round trip. It only ever refuses what Redis would refuse: a
/// sold_out for q units means fewer than q were left, so it refuses q or more, never fewer (a
/// stream of too-large requests must not keep the last units unsellable). It never grants. Any
/// cancel, expiry or stock increase seen by this gateway clears it; other gateways' releases are
/// seen when the entry runs out and its refresh comes back.
/// A sold_out answer that left Redis before a release this gateway saw is not remembered
/// (`generation` tells), so the cache never outlives a release it knows about.
///
/// When an entry runs out, one request asks Redis again (`Answer.refresh`) while the others are
/// still refused from the entry until that answer is back: without this, every request that
/// arrived before Redis answered went to Redis and waited for it (on a busy machine Redis is not
/// scheduled for up to tens of ms, and each run-out sent hundreds of requests behind it: the
/// sold-out path's p99.9 was 26-43 ms against the plain server's 7-9 ms). The refresh always
/// ends (the Redis client fails a call it has no answer for within its command timeout);
/// `refreshLimit` is a backstop: past it the entry is dropped whatever happened to the refresh.
final class SoldOutCache: Sendable {
    struct Entry {
        /// Uptime nanoseconds until which the entry stands.
        var until: Int64
        /// The smallest quantity refused: Redis had fewer units than this.
        var quantity: Int
        /// When a request started asking Redis again (the entry ran out); the others are refused
        /// meanwhile. Nil: no refresh under way.
        var refreshStarted: Int64? = nil
        /// Uptime nanoseconds past which the entry is never used, refresh or not: the sale's
        /// closing time as Redis measured it (a closed sale answers sale_closed, not sold_out).
        var lastUse: Int64 = .max
    }

    /// What the memory says of a request.
    enum Answer: Equatable {
        /// Refuse: a recent refusal stands for it.
        case soldOut
        /// Ask Redis.
        case ask
        /// Ask Redis, and report back: the entry ran out and this request renews it (`markSoldOut`)
        /// or ends it (`endRefresh`).
        case refresh
    }

    private let ttl: Int64
    private let refreshLimit: Int64
    private let entries = Mutex<[String: Entry]>([:])
    private let releases = Atomic<UInt64>(0)

    var generation: UInt64 { releases.load(ordering: .acquiring) }

    /// `refreshLimitMilliseconds`: the longest a refresh may take before its entry is dropped
    /// (the gateway passes its Redis command timeout plus the ttl).
    init(milliseconds: Int, refreshLimitMilliseconds: Int = 5_000) {
        self.ttl = Int64(milliseconds) * 1_000_000
        self.refreshLimit = Int64(max(refreshLimitMilliseconds, 1)) * 1_000_000
    }

    static func uptime() -> Int64 { Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds) }

    func check(_ basketId: String, quantity: Int, now: Int64 = uptime()) -> Answer {
        guard ttl > 0 else { return .ask }
        return entries.withLock { entries in
            guard var entry = entries[basketId] else { return .ask }
            if now >= entry.lastUse {
                entries[basketId] = nil
                return .ask
            }
            if now < entry.until { return quantity >= entry.quantity ? .soldOut : .ask }
            // Ran out: refused from the old entry only while one request asks again.
            if let started = entry.refreshStarted {
                if now - started >= refreshLimit {
                    // The backstop: a refresh that never came back does not keep it alive.
                    entries[basketId] = nil
                    return .ask
                }
                return quantity >= entry.quantity ? .soldOut : .ask
            }
            guard quantity >= entry.quantity else { return .ask }
            entry.refreshStarted = now
            entries[basketId] = entry
            return .refresh
        }
    }

    /// Redis refused q units: remembered, unless a release came since the call left (then
    /// false, and a refresh this call was making is ended).
    @discardableResult
    /// `closesInMilliseconds`: how long the sale has left by Redis's clock (nil: no closing time).
    func markSoldOut(
        _ basketId: String, quantity: Int, ifUnchangedSince generation: UInt64, closesInMilliseconds: Int? = nil, now: Int64 = uptime()
    ) -> Bool {
        guard ttl > 0 else { return false }
        return entries.withLock { entries in
            guard releases.load(ordering: .acquiring) == generation else {
                Self.endRefresh(basketId, in: &entries)
                return false
            }
            if entries.count > 10_000 { entries.removeAll() }
            // Each entry stands for one real refusal: a larger refused quantity neither replaces a
            // smaller one nor extends its time (that would let a stream of too-large requests keep
            // a stale refusal alive).
            if let existing = entries[basketId], now < existing.until, existing.quantity < quantity { return true }
            // (a sale's time left is at most years: far from overflowing in nanoseconds)
            let lastUse = closesInMilliseconds.map { now + Int64(min($0, 400_000_000_000)) * 1_000_000 } ?? .max
            entries[basketId] = Entry(until: min(now + ttl, lastUse), quantity: quantity, lastUse: lastUse)
            return true
        }
    }

    /// The request that was refreshing an entry got another answer than sold_out (units may be
    /// left, or Redis did not answer): the entry ends and requests ask Redis.
    func endRefresh(_ basketId: String) {
        guard ttl > 0 else { return }
        entries.withLock { Self.endRefresh(basketId, in: &$0) }
    }

    /// Only an entry under refresh (one renewed meanwhile has no refresh and stands).
    private static func endRefresh(_ basketId: String, in entries: inout [String: Entry]) {
        if entries[basketId]?.refreshStarted != nil { entries[basketId] = nil }
    }

    func clear(_ basketId: String) {
        guard ttl > 0 else { return }
        entries.withLock { entries in
            releases.wrappingAdd(1, ordering: .releasing)
            entries[basketId] = nil
        }
    }

    func clearAll() {
        guard ttl > 0 else { return }
        entries.withLock { entries in
            releases.wrappingAdd(1, ordering: .releasing)
            entries.removeAll()
        }
    }
}
