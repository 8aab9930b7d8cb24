import Foundation
import Logging
import Metrics
import PostgresClient
import RedisClient
import ReservationCore
import ReservationScripts
import Synchronization

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
        /// Redis rolled back (an event reused a `seq` Postgres had applied, or Redis's `seq` is
        /// behind Postgres's): never merged; the repair never raises capacity.
        case rollback
        /// Redis's and Postgres's settings (hold, limit, sale window, pause) differ while Postgres
        /// has applied the basket's latest change: the repair writes Redis's to Postgres.
        case settings

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

    /// Compares every basket in Redis with Postgres. A candidate is judged again on a consistent
    /// view (`judge`) before it is reported; with `repair`, its stream is drained first and
    /// each drifted basket is repaired (see `BasketRepair.swift`) under its exclusive lease, most
    /// active first. A basket whose repair fails is counted, logged and retried later with
    /// backoff; the others go on. Returns the drifts found (with `repair`: those the repairs
    /// were tried for or that wait for a retry, and every oversell).
    public func audit(repair: Bool) async throws -> [Drift] {
        let found = try await findDrifts()
        var drifts: [Drift] = []
        var judged: [String: Bool] = [:]
        let candidates = Set(found.filter(\.kind.needsRepair).map(\.basketId))
        if repair {
            // Lost baskets are named before anything is rebuilt, so the gateway answers them 503.
            try await markLost(found.filter { $0.kind == .missingInRedis }.map(\.basketId))
        }
        // A basket can look drifted only because its latest events are not applied yet. Such a
        // basket (Postgres behind on its `seq`, entries waiting in its stream) is judged at a
        // later audit, once applying caught up: an audit never drains a backlog, so it never
        // waits on a catch-up. Behind with nothing waiting is judged now.
        let behind = Set(found.filter(\.postgresBehind).map(\.basketId))
        let backlog = behind.isEmpty ? [] : try await consumer.partitionsWithBacklog()
        let notYet = behind.filter { backlog.contains(Keyspace.partition(ofBasket: $0)) }
        for basketId in try await mostActiveFirst(candidates.subtracting(notYet)) {
            if Task.isCancelled { break }
            if repair {
                let reason =
                    found.first { $0.basketId == basketId && $0.kind.needsRepair }
                    ?? Drift(basketId: basketId, kind: .counters, detail: "")
                judged[basketId] = try await repairIfDue(basketId, reason: reason)
            } else {
                // Read-only: judged again without draining (Postgres may be behind: reported).
                // One it cannot judge (it kept moving) is not reported: only a repair may pause it.
                judged[basketId] = ((try? await judge(basketId, drain: false)) ?? .drifted) == .drifted
            }
        }
        for drift in found where !drift.kind.needsRepair || judged[drift.basketId] == true { drifts.append(drift) }
        // Markers are set only by `rebuildUnmarkedPartitions`, after it marked that partition's
        // lost baskets: set here, they would hide a FLUSHALL that happened during this audit.
        let oversold = drifts.filter { $0.kind == .oversold }
        Gauge(label: "reconciler_oversold_baskets").record(oversold.count)
        for drift in oversold {
            logger.error("basket oversold", metadata: ["basket": "\(drift.basketId)", "detail": "\(drift.detail)"])
        }
        lastAudit.record(Date().timeIntervalSince1970)
        return drifts
    }

    /// Repairs one basket unless its last failure's backoff still runs. Returns whether it was
    /// a drift (repaired, tried, or waiting for a retry); false when the consistent view found
    /// it agreeing. Never throws for the basket's own failure: that is counted and logged.
    func repairIfDue(_ basketId: String, reason: Drift) async throws -> Bool {
        let now = ContinuousClock.now
        if let due = repairBackoff.withLock({ $0[basketId]?.notBefore }), due > now { return true }
        do {
            let result = try await repairBasket(basketId, reason: reason)
            repairBackoff.withLock { _ = $0.removeValue(forKey: basketId) }
            switch result {
            case .repaired:
                repaired(reason)
                return true
            case .consistent, .unsettled: return false
            case .busy, .leaseLost: return true
            }
        } catch {
            repairFailed(basketId, error)
            return true
        }
    }

    /// A failing repair of one basket stops nothing else: counted, logged with the basket's id,
    /// and tried again after 1, 2, 4 ... 300 s.
    func repairFailed(_ basketId: String, _ error: any Error) {
        let failures = repairBackoff.withLock { backoff -> Int in
            let failures = (backoff[basketId]?.failures ?? 0) + 1
            let delay = Duration.seconds(min(1 << min(failures - 1, 9), 300))
            backoff[basketId] = RepairBackoff(failures: failures, notBefore: ContinuousClock.now.advanced(by: delay))
            return failures
        }
        repairFailures.increment()
        housekeepingDone.withLock { $0.repairFailures += 1 }
        logger.error(
            "basket repair failed; the basket is skipped and retried later",
            metadata: ["basket": "\(basketId)", "error": "\(error)", "failures": "\(failures)"])
    }

    /// Baskets in rebuild order: most pending holds first, then most reservations changed in the
    /// last hour, then by id. After a mass loss the live sale's baskets come back first.
    public func mostActiveFirst(_ basketIds: Set<String>) async throws -> [String] {
        guard basketIds.count > 1 else { return Array(basketIds) }
        var activity: [String: (Int, Int)] = [:]
        for row in try await postgres.query(
            """
            SELECT basket_id, count(*) FILTER (WHERE status = 'pending') AS pending, count(*) AS recent
            FROM reservations
            WHERE basket_id = ANY($1::text[]) AND (status = 'pending' OR updated_at > now() - interval '1 hour')
            GROUP BY basket_id
            """, [.textArray(Array(basketIds))])
        {
            guard let id = row["basket_id"].string else { continue }
            activity[id] = (row["pending"].int ?? 0, row["recent"].int ?? 0)
        }
        return basketIds.sorted { a, b in
            let (x, y) = (activity[a] ?? (0, 0), activity[b] ?? (0, 0))
            return x != y ? x > y : a < b
        }
    }

    /// Adds lost baskets to their partition's lost set (the gateway answers them 503, not 404).
    func markLost(_ basketIds: [String]) async throws {
        let byPartition = Dictionary(grouping: basketIds, by: Keyspace.partition(ofBasket:))
        for (partition, ids) in byPartition {
            for start in stride(from: 0, to: ids.count, by: 1000) {
                let slice = ids[start..<min(start + 1000, ids.count)]
                _ = try await redis.send(["SADD", .string(Keyspace.lostBaskets(partition))] + slice.map { .string($0) })
            }
        }
    }

    func setPartitionMarkers(_ partitions: [Int]) async throws {
        guard !partitions.isEmpty else { return }
        _ = try await redis.pipeline(partitions.map { ["SET", .string(Keyspace.partitionMarker($0)), "1"] })
    }

    /// The partitions whose marker is gone: Redis lost their data (or they are new).
    func partitionsWithoutMarker() async throws -> [Int] {
        let replies = try await redis.pipeline((0..<Keyspace.partitionCount).map { ["EXISTS", .string(Keyspace.partitionMarker($0))] })
        var missing: [Int] = []
        for (partition, reply) in replies.enumerated() where (try reply.get()).int != 1 { missing.append(partition) }
        return missing
    }

    /// For each partition without its marker: every basket Postgres has there that Redis lacks
    /// goes into the lost set, the marker is set, then they are rebuilt, most active first
    /// (each rebuild takes its id off the lost set in the script that recreates the basket).
    /// Returns how many baskets it found lost.
    @discardableResult
    public func rebuildUnmarkedPartitions() async throws -> Int {
        let partitions = Set(try await partitionsWithoutMarker())
        guard !partitions.isEmpty else { return 0 }
        let ids = try await postgres.query("SELECT id FROM baskets").compactMap { $0["id"].string }
            .filter { partitions.contains(Keyspace.partition(ofBasket: $0)) }
        var lost: [String] = []
        for start in stride(from: 0, to: ids.count, by: 5000) {
            let slice = Array(ids[start..<min(start + 5000, ids.count)])
            let replies = try await redis.pipeline(
                slice.map { ["EXISTS", .string(Keyspace.basket($0, partition: Keyspace.partition(ofBasket: $0)))] })
            for (id, reply) in zip(slice, replies) where (try reply.get()).int != 1 { lost.append(id) }
        }
        try await markLost(lost)
        try await setPartitionMarkers(partitions.sorted())
        if !lost.isEmpty { logger.warning("redis lost baskets; rebuilding them, most active first", metadata: ["count": "\(lost.count)"]) }
        for basketId in try await mostActiveFirst(Set(lost)) {
            if Task.isCancelled { break }
            let drift = Drift(basketId: basketId, kind: .missingInRedis, detail: "partition marker gone; redis has no basket")
            _ = try await repairIfDue(basketId, reason: drift)
        }
        return lost.count
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
        let (postgresBaskets, malformed) = try await postgres.withConnection {
            connection -> ([String: PostgresBasket], [String: String]) in
            var result: [String: PostgresBasket] = [:]
            var malformed: [String: String] = [:]
            for row in try connection.query(
                """
                SELECT \(BasketStore.columns),
                       pending_units AS pending, confirmed_units AS confirmed
                FROM baskets
                """)
            {
                do {
                    let basket = try BasketStore.row(row)
                    result[basket.id] = PostgresBasket(row: basket, pending: row["pending"].int ?? 0, confirmed: row["confirmed"].int ?? 0)
                } catch {
                    // Reported, never guessed at nor skipped silently (its repair fails and is retried).
                    malformed[row["id"].string ?? "?"] = "\(error)"
                }
            }
            return (result, malformed)
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
        for (id, error) in malformed.sorted(by: { $0.key < $1.key }) {
            drifts.append(Drift(basketId: id, kind: .counters, detail: error))
        }
        for ((id, reply), healthReply) in zip(zip(ordered, replies), healthReplies) where malformed[id] == nil {
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
                        postgresBehind: Self.behind(health.seq, postgresBaskets[id]?.row)))
            }
            // A basket hash Redis cannot read back (corrupt counters) counts as missing: a repair rewrites it.
            let state = (try? reply.get()).flatMap { try? ReadBasketCall.decode($0) } ?? nil
            let behind = Self.behind(health?.seq, postgresBaskets[id]?.row)
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
            if postgres.row.rolledBack {
                drifts.append(Drift(basketId: id, kind: .rollback, detail: "an event reused a seq postgres had applied: redis rolled back"))
            } else if let seq = health?.seq, seq < postgres.row.redisSeq {
                drifts.append(
                    Drift(basketId: id, kind: .rollback, detail: "redis seq \(seq) is behind postgres's \(postgres.row.redisSeq)"))
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
            // A seq that is missing or out of range (Int.max) is drift of its own: a repair renumbers it.
            let seqCorrupt = !(health?.seq.map(RepairPlan.seqRange.contains) ?? false)
            if redisTuple != postgresTuple || !balanced || seqCorrupt {
                drifts.append(
                    Drift(
                        basketId: id, kind: .counters,
                        detail: (seqCorrupt ? "redis seq is missing or out of range; " : "")
                            + "redis stock=\(redisTuple[0]) pending=\(redisTuple[1]) confirmed=\(redisTuple[2]) capacity=\(redisTuple[3]); "
                            + "postgres stock=\(postgresTuple[0]) pending=\(postgresTuple[1]) confirmed=\(postgresTuple[2]) capacity=\(postgresTuple[3])",
                        postgresBehind: behind))
            } else if health?.seq == postgres.row.redisSeq, state.settings != postgres.row.settings {
                // Only once Postgres applied the latest change: before, a PATCH may be in flight.
                drifts.append(
                    Drift(
                        basketId: id, kind: .settings,
                        detail: "settings differ: redis \(Self.describe(state.settings)); postgres \(Self.describe(postgres.row.settings))"))
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

    /// Settings as their stored texts, by field name ("" for no time).
    static func describe(_ settings: BasketSettings) -> String {
        BasketSettingField.allCases.map { "\($0.rawValue)=\(settings.value(of: $0))" }.joined(separator: " ")
    }

    /// Whether Postgres's row is behind Redis's `seq`. A seq out of range (corrupt, Int.max) is
    /// not "events in flight" but drift, judged at once.
    static func behind(_ redisSeq: Int?, _ row: BasketRow?) -> Bool {
        guard let redisSeq, RepairPlan.seqRange.contains(redisSeq) else { return false }
        return redisSeq > (row?.redisSeq ?? 0)
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
