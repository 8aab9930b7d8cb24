import Foundation
import Logging
import Metrics
import PostgresClient
import RedisClient
import ReservationCore
import ReservationScripts

/// One difference between Redis and Postgres for one basket.
public struct Drift: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case missingInRedis = "missing_in_redis"
        case missingInPostgres = "missing_in_postgres"
        case counters
        case reservations
        /// The reserve script found the basket's counters disagreeing (and sold only what both
        /// agreed was there).
        case books
        /// A repair took the basket out of service and its lease ran out before it finished.
        case stuckRepair = "stuck_repair"
        /// Reservations hold more units than the basket's capacity: a real oversell (after Redis
        /// lost data, say). Reported until an operator resolves it; no repair hides it.
        case oversold

        /// Whether a repair changes something for this kind; an oversell is only reported.
        public var needsRepair: Bool { self != .oversold }
    }

    public let basketId: String
    public let kind: Kind
    public let detail: String
    /// Postgres has not seen the basket's latest change (its `redis_seq` is behind Redis's
    /// `seq`): the difference may be events not applied yet rather than drift.
    public let postgresBehind: Bool

    public init(basketId: String, kind: Kind, detail: String, postgresBehind: Bool = false) {
        self.basketId = basketId
        self.kind = kind
        self.detail = detail
        self.postgresBehind = postgresBehind
    }

    public var description: String { "basket \(basketId): \(kind.rawValue): \(detail)" }
}

/// Finding drift: compares each basket's counters and active reservations in Redis with Postgres.
/// It only reads; `BasketRepair.swift` rebuilds what it finds.
extension Reconciler {
    struct PostgresBasket {
        var row: BasketRow
        var pending: Int
        var confirmed: Int
    }

    /// Compares every basket in Redis with Postgres. With `repair`, each drifted basket is
    /// repaired (see `BasketRepair.swift`) under its exclusive lease. Returns the drifts found
    /// (with `repair`: those still there after draining, i.e. the ones repairs were tried for,
    /// and every oversell).
    public func audit(repair: Bool) async throws -> [Drift] {
        var drifts = try await findDrifts()
        if repair, drifts.contains(where: { $0.kind.needsRepair }) {
            // A basket can look drifted only because its latest events are not applied yet. Such
            // a basket (Postgres behind on its `seq`, entries waiting in its stream) is judged at
            // a later audit, once applying caught up; nothing is drained here, so housekeeping
            // never waits on a catch-up. Behind with nothing waiting means its events were lost:
            // repaired now. (`once` drains before it audits, so nothing there is behind.)
            let backlog = try await consumer.partitionsWithBacklog()
            var notYet: Set<String> = []
            var done: Set<String> = []
            for drift in drifts where drift.kind.needsRepair && !done.contains(drift.basketId) && !notYet.contains(drift.basketId) {
                if drift.postgresBehind && backlog.contains(Keyspace.partition(ofBasket: drift.basketId)) {
                    notYet.insert(drift.basketId)
                    continue
                }
                done.insert(drift.basketId)
                if case .repaired = try await repairBasket(drift.basketId, reason: drift) { repaired(drift) }
            }
            drifts.removeAll { notYet.contains($0.basketId) && $0.kind.needsRepair }
        }
        let oversold = drifts.filter { $0.kind == .oversold }
        Gauge(label: "reconciler_oversold_baskets").record(oversold.count)
        for drift in oversold {
            logger.error("basket oversold", metadata: ["basket": "\(drift.basketId)", "detail": "\(drift.detail)"])
        }
        lastAudit.record(Date().timeIntervalSince1970)
        return drifts
    }

    func findDrifts() async throws -> [Drift] {
        // Redis first, then Postgres: an event Redis has that Postgres lacks is then either still
        // waiting in its stream or applied in time for the Postgres read (never a false lag).
        var redisIds: Set<String> = []
        for partition in 0..<Keyspace.partitionCount {
            redisIds.formUnion(try await redis.run(BasketIndexCall(partition: partition)))
        }
        let redisOrdered = redisIds.sorted()
        let redisReplies = try await redis.pipeline(redisOrdered.map { ReadBasketCall(basketId: $0).command })
        let redisHealth = try await redis.pipeline(redisOrdered.map { BasketHealthCall(basketId: $0).command })
        let redisNow = try await redisMilliseconds()
        let postgresBaskets = try await postgres.withConnection { connection -> [String: PostgresBasket] in
            var result: [String: PostgresBasket] = [:]
            for row in try connection.query(
                """
                SELECT id, stock, capacity, hold_seconds, max_per_consumer, redis_seq, version,
                       pending_units AS pending, confirmed_units AS confirmed
                FROM baskets
                """)
            {
                let basket = BasketStore.row(row)
                result[basket.id] = PostgresBasket(row: basket, pending: row["pending"].int ?? 0, confirmed: row["confirmed"].int ?? 0)
            }
            return result
        }
        // Baskets only Postgres knows are read from Redis now (they are missing there, or new).
        let postgresOnly = Set(postgresBaskets.keys).subtracting(redisIds).sorted()
        let lateReplies = try await redis.pipeline(postgresOnly.map { ReadBasketCall(basketId: $0).command })
        let lateHealth = try await redis.pipeline(postgresOnly.map { BasketHealthCall(basketId: $0).command })
        let ordered = redisOrdered + postgresOnly
        let replies = redisReplies + lateReplies
        let healthReplies = redisHealth + lateHealth
        var drifts: [Drift] = []
        var consistent: Set<String> = []
        var behindBaskets: Set<String> = []
        for ((id, reply), healthReply) in zip(zip(ordered, replies), healthReplies) {
            let health = (try? healthReply.get()).flatMap { try? BasketHealthCall.decode($0) }
            if let health, health.repairOwner != nil {
                // Under repair: its counters are being rewritten. Only a repair whose lease ran
                // out (its reconciler died or stalled) is a drift; a running one is left alone.
                if (health.leaseEndMilliseconds ?? 0) <= redisNow {
                    drifts.append(Drift(basketId: id, kind: .stuckRepair, detail: "a repair's lease ran out with the basket out of service"))
                }
                continue
            }
            if let health, health.booksMismatches > 0 {
                drifts.append(
                    Drift(
                        basketId: id, kind: .books,
                        detail: "the reserve script found stock != capacity - pending - confirmed \(health.booksMismatches) times",
                        postgresBehind: (health.seq ?? 0) > (postgresBaskets[id]?.row.redisSeq ?? 0)))
            }
            // A basket hash Redis cannot read back (corrupt counters) counts as missing: a repair rewrites it.
            let state = (try? reply.get()).flatMap { try? ReadBasketCall.decode($0) } ?? nil
            let behind = (health?.seq ?? 0) > (postgresBaskets[id]?.row.redisSeq ?? 0)
            if let postgres = postgresBaskets[id], Self.units(postgres.pending, postgres.confirmed) > postgres.row.capacity {
                drifts.append(
                    Drift(
                        basketId: id, kind: .oversold,
                        detail:
                            "postgres: reservations hold \(Self.units(postgres.pending, postgres.confirmed)) units of capacity \(postgres.row.capacity)"
                    ))
            } else if let state, Self.units(state.pending, state.confirmed) > state.capacity {
                drifts.append(
                    Drift(
                        basketId: id, kind: .oversold,
                        detail: "redis: reservations hold \(Self.units(state.pending, state.confirmed)) units of capacity \(state.capacity)"))
            }
            guard let postgres = postgresBaskets[id] else {
                if state != nil {
                    drifts.append(
                        Drift(basketId: id, kind: .missingInPostgres, detail: "redis has the basket, postgres has no row", postgresBehind: behind))
                }
                continue
            }
            guard let state else {
                drifts.append(
                    Drift(
                        basketId: id, kind: .missingInRedis,
                        detail: "postgres has stock=\(postgres.row.stock) capacity=\(postgres.row.capacity); redis has no basket"))
                continue
            }
            let redisTuple = [state.stock, state.pending, state.confirmed, state.capacity]
            let postgresTuple = [postgres.row.stock, postgres.pending, postgres.confirmed, postgres.row.capacity]
            // An oversold basket after its repair has stock 0 and more held than capacity: that is
            // the oversell (reported above), not a counter to repair again.
            let oversoldAndClosed = state.stock == 0 && Self.units(state.pending, state.confirmed) > state.capacity
            let balanced = Self.units(redisTuple[0], redisTuple[1], redisTuple[2]) == redisTuple[3] || oversoldAndClosed
            if redisTuple != postgresTuple || !balanced {
                drifts.append(
                    Drift(
                        basketId: id, kind: .counters,
                        detail:
                            "redis stock=\(redisTuple[0]) pending=\(redisTuple[1]) confirmed=\(redisTuple[2]) capacity=\(redisTuple[3]); "
                            + "postgres stock=\(postgresTuple[0]) pending=\(postgresTuple[1]) confirmed=\(postgresTuple[2]) capacity=\(postgresTuple[3])",
                        postgresBehind: behind))
            } else if behind {
                behindBaskets.insert(id)
                consistent.insert(id)
            } else {
                consistent.insert(id)
            }
        }
        // Every pending reservation, and every confirmed one changed within the last
        // `recentlyConfirmedSeconds`, must exist in Redis with the same status. Older confirmed
        // ones are history: their units are in the counters compared above (kept on the basket
        // row by migration 003's triggers), so the audit's cost follows live data, not history.
        let active = try await postgres.query(
            """
            SELECT id, basket_id, status FROM reservations WHERE status = 'pending'
            UNION ALL
            SELECT id, basket_id, status FROM reservations
            WHERE status = 'confirmed' AND updated_at > now() - make_interval(secs => $1)
            """, [.int(Self.recentlyConfirmedSeconds)])
        let checked = active.filter { consistent.contains($0["basket_id"].string ?? "") }
        var mismatches: [String: Int] = [:]
        var totals: [String: Int] = [:]
        for chunk in stride(from: 0, to: checked.count, by: 5000) {
            let slice = checked[chunk..<min(chunk + 5000, checked.count)]
            let replies = try await redis.pipeline(
                slice.map { row in
                    let id = row["id"].string ?? ""
                    let partition = ReservationIdGenerator.partition(of: id) ?? Keyspace.partition(ofForeignId: id)
                    return ReadReservationCall(reservationId: id, partition: partition).command
                })
            for (row, reply) in zip(slice, replies) {
                let basketId = row["basket_id"].string ?? ""
                totals[basketId, default: 0] += 1
                let record = (try? reply.get()).flatMap { try? ReadReservationCall.decode($0) } ?? nil
                if record?.status.rawValue != row["status"].string { mismatches[basketId, default: 0] += 1 }
            }
        }
        for (basketId, count) in mismatches.sorted(by: { $0.key < $1.key }) {
            drifts.append(
                Drift(
                    basketId: basketId, kind: .reservations,
                    detail: "\(count) of \(totals[basketId] ?? 0) active reservations are missing or differ in redis",
                    postgresBehind: behindBaskets.contains(basketId)))
        }
        return drifts
    }

    /// A sum of unit counters read from Redis or Postgres, saturating instead of trapping: a
    /// corrupt counter must show up as drift, not stop the reconciler.
    static func units(_ values: Int...) -> Int {
        var total = 0
        for value in values {
            let (sum, overflow) = total.addingReportingOverflow(value)
            total = overflow ? (value > 0 ? .max : .min) : sum
        }
        return total
    }

    /// How far back the audit checks confirmed reservations one by one.
    static let recentlyConfirmedSeconds = 3600

    /// Redis's clock, which the repair leases are written in.
    func redisMilliseconds() async throws -> Int {
        let reply = try await redis.send("TIME")
        // Range-checked before any arithmetic: a reply is data from outside.
        guard let parts = reply.array, parts.count == 2, let seconds = parts[0].string.flatMap(Int.init),
            let micros = parts[1].string.flatMap(Int.init), (0...(Int.max / 1000 - 1)).contains(seconds), (0..<1_000_000).contains(micros)
        else { throw StoreReplyError("time", reply) }
        return seconds * 1000 + micros / 1000
    }
}
