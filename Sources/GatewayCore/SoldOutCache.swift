import NIOCore
import Synchronization

/// Remembers, for a few milliseconds, that a basket answered sold_out, so a stampede on a sold-out
/// basket is refused without a Redis round trip. It only ever refuses what Redis would refuse: a
/// sold_out for q units means fewer than q were left, so it refuses q or more, never fewer (a
/// stream of too-large requests must not keep the last units unsellable). It never grants. Any
/// cancel, expiry or stock increase seen by this gateway clears it; other gateways' releases are
/// seen when the entry runs out.
/// A sold_out answer that left Redis before a release this gateway saw is not remembered
/// (`generation` tells), so the cache never outlives a release it knows about.
final class SoldOutCache: Sendable {
    struct Entry {
        /// Uptime nanoseconds until which the entry stands.
        var until: Int64
        /// The smallest quantity refused: Redis had fewer units than this.
        var quantity: Int
    }

    private let ttl: Int64
    private let entries = Mutex<[String: Entry]>([:])
    private let releases = Atomic<UInt64>(0)

    var generation: UInt64 { releases.load(ordering: .acquiring) }

    init(milliseconds: Int) { self.ttl = Int64(milliseconds) * 1_000_000 }

    func isSoldOut(_ basketId: String, quantity: Int) -> Bool {
        guard ttl > 0 else { return false }
        let now = Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds)
        return entries.withLock { entries in
            guard let entry = entries[basketId] else { return false }
            if now >= entry.until {
                entries[basketId] = nil
                return false
            }
            return quantity >= entry.quantity
        }
    }

    func markSoldOut(_ basketId: String, quantity: Int, ifUnchangedSince generation: UInt64) {
        guard ttl > 0 else { return }
        let now = Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds)
        entries.withLock { entries in
            guard releases.load(ordering: .acquiring) == generation else { return }
            if entries.count > 10_000 { entries.removeAll() }
            // Each entry stands for one real refusal: a larger refused quantity neither replaces a
            // smaller one nor extends its time (that would let a stream of too-large requests keep
            // a stale refusal alive).
            if let existing = entries[basketId], now < existing.until, existing.quantity < quantity { return }
            entries[basketId] = Entry(until: now + ttl, quantity: quantity)
        }
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
