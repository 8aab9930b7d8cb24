/// Where everything lives in Redis. All keys of a basket (its hash, its reservations, its
/// consumers' counters, idempotency records, holds and its event stream) share one hash tag,
/// `{rgNN}`, NN being the basket's partition, so every script touches a single Cluster slot.
public enum Keyspace {
    /// Fixed number of partitions (and streams). Changing it moves baskets between partitions,
    /// so it is a constant of the data format, not a setting.
    public static let partitionCount = 16

    /// The partition of a basket: FNV-1a of its id, stable across processes and versions.
    public static func partition(ofBasket basketId: String) -> Int {
        Int(fnv1a(basketId) % UInt32(partitionCount))
    }

    /// The partition of an arbitrary string (a reservation id we did not issue, an event id).
    public static func partition(ofForeignId id: String) -> Int { partition(ofBasket: id) }

    public static func prefix(_ partition: Int) -> String {
        partition < 10 ? "{rg0\(partition)}" : "{rg\(partition)}"
    }

    public static func basket(_ basketId: String, partition: Int) -> String { prefix(partition) + ":b:" + basketId }
    public static func reservation(_ reservationId: String, partition: Int) -> String { prefix(partition) + ":r:" + reservationId }
    /// Units each consumer holds on a basket: one hash per basket (consumer id -> units), so a
    /// repair rewrites it whole instead of searching for per-consumer keys.
    public static func consumerUnits(basketId: String, partition: Int) -> String { prefix(partition) + ":u:" + basketId }
    /// An Idempotency-Key's record belongs to one consumer on one basket (ids hold no `/`, so the
    /// parts cannot run into each other; the key, last, may hold anything).
    public static func idempotency(basketId: String, consumerId: String, key: String, partition: Int) -> String {
        prefix(partition) + ":i:" + basketId + "/" + consumerId + "/" + key
    }
    /// A basket's waiting room: its schedule, draw and counts (a hash of `RoomField`s).
    public static func room(basketId: String, partition: Int) -> String { prefix(partition) + ":q:" + basketId }
    /// A waiting room's members: consumer id -> place number (one hash, so one consumer has one
    /// place and a joined consumer costs one hash entry).
    public static func queue(basketId: String, partition: Int) -> String { prefix(partition) + ":qm:" + basketId }
    public static func rateLimit(consumerId: String, partition: Int) -> String { prefix(partition) + ":rl:" + consumerId }
    public static func holds(_ partition: Int) -> String { perPartition(holdsKeys, partition, ":holds") }
    public static func stream(_ partition: Int) -> String { perPartition(streamKeys, partition, ":events") }
    public static func basketIndex(_ partition: Int) -> String { prefix(partition) + ":baskets" }
    /// Basket ids Postgres holds and Redis lost (a `FLUSHALL`, a failover to a stale replica):
    /// written by the reconciler as soon as it finds them, each removed by the repair that
    /// rebuilds its basket. Until then the gateway answers such a basket 503 `unavailable`, not
    /// 404 (so no client, and no Idempotency-Key record, is told it does not exist).
    public static func lostBaskets(_ partition: Int) -> String { perPartition(lostKeys, partition, ":lost") }
    /// Written by the reconciler once it has compared the partition's baskets with Postgres: a
    /// partition without it lost its data (or is new), and is checked at once, not at the next audit.
    public static func partitionMarker(_ partition: Int) -> String { perPartition(markerKeys, partition, ":present") }

    // The keys that depend on the partition alone, built once: the reserve path names four of
    // them on every call.
    private static let holdsKeys = table(":holds")
    private static let streamKeys = table(":events")
    private static let lostKeys = table(":lost")
    private static let markerKeys = table(":present")

    private static func table(_ suffix: String) -> [String] { (0..<partitionCount).map { prefix($0) + suffix } }

    private static func perPartition(_ table: [String], _ partition: Int, _ suffix: String) -> String {
        table.indices.contains(partition) ? table[partition] : prefix(partition) + suffix
    }
    public static func webhookClaim(eventId: String, partition: Int) -> String { prefix(partition) + ":wh:" + eventId }

    static func fnv1a(_ text: String) -> UInt32 {
        var hash: UInt32 = 2_166_136_261
        for byte in text.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return hash
    }
}

/// How long Redis keeps things. Postgres keeps them for good.
public enum Retention {
    /// Idempotency records of a grant: the contract's 24 h.
    public static let idempotencySeconds = 86_400
    /// Idempotency records of a refusal that changed nothing: `IDEMPOTENCY_REFUSAL_SECONDS`'s default.
    public static let idempotencyRefusalSeconds = 300
    /// Webhook event-id claims: the contract's 7 days.
    public static let webhookClaimSeconds = 7 * 86_400
    /// A cancelled or expired reservation stays readable in Redis for 7 days.
    public static let finishedReservationSeconds = 7 * 86_400
}
