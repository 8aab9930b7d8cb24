import Logging
import Metrics
import PostgresClient
import RedisClient
import ReservationCore
import ReservationScripts
import Synchronization

/// What one repair of a basket did.
public enum RepairResult: Sendable, Equatable {
    /// Redis and Postgres now both hold the union of what either knew. `oversoldBy` > 0 when
    /// that union holds more units than the basket's capacity: a real oversell, which the repair
    /// does not hide (capacity stays, stock is 0, the audit keeps reporting it).
    case repaired(oversoldBy: Int)
    /// Another repair owns the basket (its lease runs): this one did nothing.
    case busy
    /// This repair's lease ran out and another repair took the basket over: it stopped before
    /// writing its snapshot.
    case leaseLost
    /// Judged again on a consistent view (its stream drained, under the lease), the basket
    /// agrees with Postgres: the audit saw it between two changes. Nothing was written.
    case consistent
    /// It kept changing faster than Postgres caught up: judged again at a later audit.
    case unsettled
}

/// Rebuilding a basket: Redis and Postgres are both brought to the union of what either of them
/// knows, reservation by reservation, under an exclusive, fenced lease.
///
/// - The lease (`lua/repair_lease.lua`) takes the basket out of service with this repair's own
///   random token; a second repair (another reconciler, an operator's `once`) finds it busy and
///   leaves it alone. Every Redis write of the repair checks the token first, so a repair that
///   stalled past its lease and was taken over writes nothing; only the owner puts the basket
///   back in service.
/// - Neither side is assumed right. A reservation Redis has and Postgres lacks (Postgres restored
///   from a backup, events lost) is written to Postgres; one Postgres has and Redis lost (Redis
///   lost its last second) is written back to Redis, with its webhook claims, if Redis should
///   still hold it (active, or finished within its retention). Where both have it, the further
///   status wins (pending < confirmed < cancelled | expired), as in `EventApplier`.
/// - Counters come from that union. Capacity is never raised: the lower of the two sides, also
///   when Redis rolled back (see `RepairPlan.make`, which decides all of this from the two
///   snapshots; this file reads them and executes the plan).
extension Reconciler {
    /// Repairs one basket, if it still differs on a consistent view and no other repair holds it.
    /// First judged without the lease (its stream drained, Postgres read before Redis, Redis
    /// read between two equal `seq`s), so a basket the audit saw mid-change is never taken out
    /// of service; then judged again under the lease, where it cannot change, and only repaired
    /// if it still differs.
    @discardableResult
    public func repairBasket(_ basketId: String, reason: Drift) async throws -> RepairResult {
        switch try await judge(basketId, drain: true) {
        case .consistent:
            unsettled.withLock { _ = $0.removeValue(forKey: basketId) }
            return .consistent
        case .unsettled:
            // A basket that changes faster than Postgres catches up cannot be judged without
            // the lease, and taking a live basket out of service to judge it is what users
            // would see (503s in a sale): it is judged once it calms. (Redis's own books are
            // judged however busy it is: their drift is `.drifted`.)
            let times = unsettled.withLock { counts -> Int in
                counts[basketId, default: 0] += 1
                return counts[basketId] ?? 0
            }
            if times % Self.unsettledAuditsLogged == 0 {
                logger.info("basket too busy to judge; judged once it calms", metadata: ["basket": "\(basketId)", "audits": "\(times)"])
            }
            return .unsettled
        case .drifted: break
        }
        unsettled.withLock { _ = $0.removeValue(forKey: basketId) }
        // A repair of ours that failed after writing left its lease: the retry takes it back.
        let kept = keptLeases.withLock { $0[basketId] }
        let lease = kept ?? RepairLease(token: Self.newToken(), milliseconds: configuration.repairLeaseMilliseconds)
        switch try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: lease)) {
        case .acquired: break
        case .busy(let left):
            if kept != nil { keptLeases.withLock { _ = $0.removeValue(forKey: basketId) } }  // taken over
            logger.info("basket repair skipped: another repair holds it", metadata: ["basket": "\(basketId)", "lease_left_ms": "\(left)"])
            return .busy
        case .released, .lost:
            throw StoreReplyError("repair_lease", .null)
        }
        var wroteRedis = false
        do {
            let result = try await repairUnderLease(basketId, reason: reason, lease: lease, wroteRedis: &wroteRedis)
            keptLeases.withLock { _ = $0.removeValue(forKey: basketId) }
            if result == .leaseLost {
                logger.warning("basket repair lost its lease; another repair took over", metadata: ["basket": "\(basketId)"])
            }
            return result
        } catch {
            if wroteRedis {
                // Half-written (a reservation may be back without its units in `pending`): never
                // put on sale. It stays out of service until this repair's retry or, once the
                // lease ran out, another repair's takeover (`stuck_repair`) finishes it.
                keptLeases.withLock { $0[basketId] = lease }
                logger.error(
                    "basket repair failed after writing to redis; the basket stays out of service until a repair finishes it",
                    metadata: ["basket": "\(basketId)"])
            } else {
                // Nothing written to Redis: back in service if this repair still owns it.
                keptLeases.withLock { _ = $0.removeValue(forKey: basketId) }
                _ = try? await redis.run(RepairLeaseCall(basketId: basketId, mode: .release, lease: lease))
            }
            throw error
        }
    }

    /// What a judgement without the lease found.
    enum Verdict: Sendable, Equatable {
        case consistent
        case drifted
        /// Redis kept moving ahead of Postgres: no view of one moment could be taken.
        case unsettled
    }

    /// Every this many audits in a row that find a basket unsettled, it is logged.
    static let unsettledAuditsLogged = 10

    /// Whether `basketId` differs between the two stores, judged without the lease on a view
    /// that is consistent: Postgres is read first (one transaction), then Redis between two
    /// reads of its `seq` (every change bumps it). Equal seqs mean both views are of the same
    /// moment; Redis ahead means events in flight (drained, then judged again).
    func judge(_ basketId: String, drain shouldDrain: Bool) async throws -> Verdict {
        let partition = Keyspace.partition(ofBasket: basketId)
        var lastRedis: RedisBasketSnapshot?
        for _ in 0..<3 {
            if shouldDrain {
                // A partition far behind is caught up by the consumer, not by an audit: this
                // basket is judged at a later audit (its events may simply not be applied yet).
                let limit = 4 * batchSize  // four transactions at most
                if try await drain(streams: [Keyspace.stream(partition)], limit: limit) >= limit { return .unsettled }
            }
            let postgresSide = try await postgresSnapshot(basketId, redisIds: [], full: false)
            let ids = Array(postgresSide.reservations.keys)
            let redisSide = try await redisSnapshot(basketId, ids: ids)
            if redisSide.maintenance { return .drifted }  // a repair holds it (or left it): the lease decides
            // Its counters come from one HMGET: of one moment even when the rest moved on.
            lastRedis = redisSide.snapshot
            guard redisSide.settled else { continue }
            if let row = postgresSide.row, let seq = redisSide.snapshot.seq, seq > row.redisSeq {
                // Events in flight, or lost (Postgres restored from a backup, the stream trimmed).
                if try await eventsLost(basketId, redisSeq: seq) { return .drifted }
                continue
            }
            return try RepairPlan.make(basketId: basketId, redis: redisSide.snapshot, postgres: postgresSide).needsRepair
                ? .drifted : .consistent
        }
        // Redis's own books need no Postgres to be judged: one view of one moment of Redis that
        // does not balance is drift, however busy the basket is.
        if let lastRedis, !RepairPlan.redisEvidence(lastRedis).isEmpty { return .drifted }
        return .unsettled
    }

    /// Whether the events that would bring Postgres's row to `redisSeq` are gone: the
    /// partition's stream holds nothing unacknowledged, and Postgres, read after that check
    /// (every acknowledged entry is committed), is still behind.
    func eventsLost(_ basketId: String, redisSeq: Int) async throws -> Bool {
        guard try await !consumer.hasBacklog(Keyspace.stream(Keyspace.partition(ofBasket: basketId))) else { return false }
        let row = try await postgres.withConnection { try BasketStore.read($0, basketId) }
        return (row?.redisSeq ?? 0) < redisSeq
    }

    private func repairUnderLease(_ basketId: String, reason: Drift, lease: RepairLease, wroteRedis: inout Bool) async throws
        -> RepairResult
    {
        let partition = Keyspace.partition(ofBasket: basketId)
        // What the gateway recorded before the lease reaches Postgres first (events another
        // reconciler holds in flight are claimed and applied too: the drain takes them over).
        _ = try await drain(streams: [Keyspace.stream(partition)])
        guard try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: lease)) == .acquired else {
            return .leaseLost
        }
        // The basket is frozen now: both sides are read once, and the plan decides alone.
        let redisSide = try await redisSnapshot(basketId, ids: nil)
        guard redisSide.settled else { throw StoreReplyError("repair snapshot: the basket changed under the lease", .null) }
        let postgresSide = try await postgresSnapshot(basketId, redisIds: Array(redisSide.snapshot.reservations.keys), full: true)
        let plan = try RepairPlan.make(basketId: basketId, redis: redisSide.snapshot, postgres: postgresSide)
        guard plan.needsRepair else {
            _ = try await redis.run(RepairLeaseCall(basketId: basketId, mode: .release, lease: lease))
            return .consistent
        }
        if postgresSide.row == nil && plan.createRow == nil {
            // Neither side knows the basket (its row was deleted after it was marked lost):
            // nothing to rebuild, and it leaves the lost set, or the gateway answers 503 forever.
            _ = try await redis.run(RepairLeaseCall(basketId: basketId, mode: .release, lease: lease))
            _ = try await redis.send("SREM", .string(Keyspace.lostBaskets(partition)), .string(basketId))
            return .consistent
        }
        logger.info("basket repair plan", metadata: ["basket": "\(basketId)", "reasons": "\(plan.reasons.joined(separator: "; "))"])
        return try await execute(plan, basketId: basketId, reason: reason, lease: lease, wroteRedis: &wroteRedis)
    }

    /// Bounded chunks: no script or statement of a repair grows with the basket's size.
    static let repairChunk = 500

    /// Writes `plan`: Postgres's missing reservations, then Redis's (in chunks, each renewing the
    /// lease), webhook claims, the staged consumer units, Postgres's row (the plan's counters and
    /// seq), and last the basket itself, which puts it back in service.
    /// `wroteRedis` turns true before the first Redis write is sent (a timeout may come after
    /// the script ran): from then on, a failure must not put the basket back in service.
    func execute(_ plan: RepairPlan, basketId: String, reason: Drift, lease: RepairLease, wroteRedis: inout Bool) async throws
        -> RepairResult
    {
        let chunk = Self.repairChunk
        let writes = plan.postgresWrites.sorted { $0.key < $1.key }
        try await postgres.withConnection { connection in
            if let create = plan.createRow {
                // Postgres lost the basket (its events are gone): start its row from Redis.
                try BasketStore.update(connection, basketId, create: create) { _ in nil }
            }
            for start in stride(from: 0, to: writes.count, by: chunk) {
                let part = Dictionary(uniqueKeysWithValues: writes[start..<min(start + chunk, writes.count)].map { ($0.key, $0.value) })
                do {
                    try EventApplier.write(EventApplier.Changes(reservations: part), on: connection)
                } catch let error as PostgresError where error.isRefusedData {
                    // A row Postgres refuses (one the dead-letter path set aside, say) must not
                    // stop the rest of the repair: one by one, and the refused ones set aside.
                    for (id, record) in part.sorted(by: { $0.key < $1.key }) {
                        do {
                            try EventApplier.write(EventApplier.Changes(reservations: [id: record]), on: connection)
                        } catch let error as PostgresError where error.isRefusedData {
                            self.logger.error(
                                "repair: postgres refused a reservation; set aside, the rest of the repair goes on",
                                metadata: ["basket": "\(basketId)", "reservation": "\(id)", "error": "\(error)"])
                        }
                    }
                }
            }
        }
        wroteRedis = true
        for start in stride(from: 0, to: plan.redisWrites.count, by: chunk) {
            let part = plan.redisWrites[start..<min(start + chunk, plan.redisWrites.count)].map { ($0.id, $0.record, $0.ttlSeconds) }
            if try await redis.run(RepairReservationsCall(part, basketId: basketId, lease: lease)) == .leaseLost { return .leaseLost }
        }
        // Webhook claims Redis lost come back from `payments`, so a redelivery stays a duplicate.
        // SET NX: a claim that exists is never touched; a claim is right whoever writes it.
        for start in stride(from: 0, to: plan.claims.count, by: 1000) {
            let replies = try await redis.pipeline(
                plan.claims[start..<min(start + 1000, plan.claims.count)].map { claim in
                    let partition = ReservationIdGenerator.partition(of: claim.reservationId) ?? Keyspace.partition(ofForeignId: claim.reservationId)
                    let ttl = max(Retention.webhookClaimSeconds - max(claim.ageSeconds, 0), 1)
                    return [
                        "SET", .string(Keyspace.webhookClaim(eventId: claim.eventId, partition: partition)), .string(claim.outcome), "NX", "EX",
                        .int(ttl),
                    ]
                }, replication: .always)
            // With REDIS_WAIT_REPLICAS, claims the replicas do not hold yet fail the repair (it is
            // tried again), as every other write of it does.
            for case .failure(let error) in replies where (error as? RedisError) == .notReplicated { throw error }
        }
        let units = plan.unitsByConsumer.sorted { $0.key < $1.key }.map { (consumer: $0.key, units: $0.value) }
        for start in stride(from: 0, to: units.count, by: chunk) {
            let call = RepairUnitsCall(
                basketId: basketId, units: Array(units[start..<min(start + chunk, units.count)]), first: start == 0, lease: lease)
            if try await redis.run(call) == .leaseLost { return .leaseLost }
        }
        // Postgres's row while the basket is still frozen: no event can land between the two.
        try await recordRepair(plan, basketId: basketId)
        let call = RepairBasketCall(basketId: basketId, state: plan.state, seq: plan.seq, reason: reason.kind.rawValue, lease: lease)
        if try await redis.run(call) == .leaseLost { return .leaseLost }
        if plan.oversoldBy > 0 { oversold(basketId, by: plan.oversoldBy, capacity: plan.state.capacity) }
        return .repaired(oversoldBy: plan.oversoldBy)
    }

    /// Postgres's row for `plan`: its counters and seq, and any rollback mark cleared (the
    /// basket_repaired event carries the same seq and is then taken as applied). Written before
    /// `repair_basket` puts the basket back on sale; a row already past `plan.seq` holds newer
    /// events and is left alone (never overwritten with the plan's older counters).
    func recordRepair(_ plan: RepairPlan, basketId: String) async throws {
        try await postgres.withConnection { connection in
            try connection.transaction { connection in
                try EventApplier.lockBaskets([basketId], on: connection)
                try BasketStore.update(connection, basketId) { row in
                    guard row.redisSeq <= plan.seq else { return nil }
                    var next = row
                    next.stock = plan.state.stock
                    next.capacity = plan.state.capacity
                    next.settings = plan.state.settings
                    next.rolledBack = false
                    if plan.seq > row.redisSeq {
                        next.redisSeq = plan.seq
                        next.redisEntry = nil
                    }
                    // The basket_repaired event carries these settings at `plan.seq`.
                    next.settingsSeq = max(row.settingsSeq, plan.seq)
                    return next == row ? nil : next
                }
                // The row's unit totals recomputed from its reservations (rows edited by hand are
                // counted again); only active ones are summed, through the per-status index.
                try connection.execute(
                    """
                    UPDATE baskets SET
                        pending_units = (SELECT COALESCE(sum(quantity), 0) FROM reservations WHERE basket_id = $1 AND status = 'pending'),
                        confirmed_units = (SELECT COALESCE(sum(quantity), 0) FROM reservations WHERE basket_id = $1 AND status = 'confirmed')
                    WHERE id = $1
                    """, [.text(basketId)])
            }
        }
    }

    /// Redis's side of a basket, and whether a repair holds it. `ids`: read these reservations
    /// (nil: every reservation of the basket, by a scan of its partition). Read between two reads
    /// of the basket's `seq`; `settled` is false when it changed meanwhile (then only the basket's
    /// own fields, read by one HMGET, are of one moment).
    func redisSnapshot(_ basketId: String, ids: [String]?) async throws -> (
        snapshot: RedisBasketSnapshot, maintenance: Bool, settled: Bool
    ) {
        let partition = Keyspace.partition(ofBasket: basketId)
        let basketKey = Keyspace.basket(basketId, partition: partition)
        // Every `BasketField`, then the repair's own fields, each read back by its name.
        let names = BasketField.allCases.map(\.rawValue) + ["seq", "maint", "mismatch"]
        let fields = try await redis.send(["HMGET", .string(basketKey)] + names.map { .string($0) })
        guard let values = fields.array, values.count == names.count else { throw StoreReplyError("repair snapshot", fields) }
        let byName = Dictionary(uniqueKeysWithValues: zip(names, values))
        func text(_ name: String) -> String? { byName[name]?.string }
        var reservations: [String: ReservationRecord] = [:]
        if let ids {
            for start in stride(from: 0, to: ids.count, by: 5000) {
                let slice = ids[start..<min(start + 5000, ids.count)]
                let replies = try await redis.pipeline(slice.map { ReadReservationCall(reservationId: $0, partition: partition).command })
                for (id, reply) in zip(slice, replies) {
                    guard let record = (try? reply.get()).flatMap({ try? ReadReservationCall.decode($0) }) ?? nil else { continue }
                    if record.basketId == basketId { reservations[id] = record }
                }
            }
        } else {
            reservations = try await redisReservations(of: basketId, partition: partition)
        }
        var units: [String: Int]? = [:]
        let flat: [RedisValue]
        do {
            flat = try await redis.send("HGETALL", .string(Keyspace.consumerUnits(basketId: basketId, partition: partition))).array ?? []
        } catch RedisError.server(let message) where message.hasPrefix("WRONGTYPE") {
            // not a hash (corruption; the reserve scripts refuse the basket's requests): rewritten
            flat = []
            units = nil
        }
        var index = 0
        while index + 1 < flat.count {
            if let consumer = flat[index].string, let value = RedisBasketSnapshot.number(flat[index + 1].string, in: RepairPlan.counterRange) {
                if value > 0 { units?[consumer] = value }
            } else {
                units = nil  // a value that is not a count: the hash is rewritten
                break
            }
            index += 2
        }
        let after = try await redis.send("HGET", .string(basketKey), "seq")

        let counters = RepairPlan.counterRange
        let stock = RedisBasketSnapshot.number(text(BasketField.stock.rawValue), in: counters)
        // Hold and limit must also fit Postgres's `integer` columns.
        let settings = BasketSettings { text($0.rawValue) }.flatMap {
            counters.contains($0.holdSeconds) && counters.contains($0.maxPerConsumer) ? $0 : nil
        }
        var snapshot = RedisBasketSnapshot(
            exists: stock != nil, stock: stock,
            pending: RedisBasketSnapshot.number(text(BasketField.pending.rawValue) ?? "0", in: counters),
            confirmed: RedisBasketSnapshot.number(text(BasketField.confirmed.rawValue) ?? "0", in: counters),
            capacity: RedisBasketSnapshot.number(text(BasketField.capacity.rawValue), in: counters), settings: settings,
            seq: RedisBasketSnapshot.number(text("seq"), in: RepairPlan.seqRange), reservations: reservations, consumerUnits: units)
        // Any mark counts, a corrupt one too (as the audit reads it): the repair clears it.
        let mismatch = byName["mismatch"] ?? .null
        snapshot.booksMismatches = BasketHealthCall.mismatches(mismatch)
        return (snapshot, !(byName["maint"] ?? .null).isNull, after.string == text("seq"))
    }

    /// Postgres's side of a basket, in one transaction: its row, its active reservations, those
    /// changed within Redis's retention (`full`), and those Redis holds (`redisIds`, whatever
    /// their age: a rollback may have brought back one Postgres finished long ago). With
    /// `full`, the webhook claims and the payments that found no reservation too.
    func postgresSnapshot(_ basketId: String, redisIds: [String], full: Bool) async throws -> PostgresBasketSnapshot {
        let retention = Retention.finishedReservationSeconds
        return try await postgres.withConnection { connection -> PostgresBasketSnapshot in
            try connection.transaction { connection in
                try connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                let rows = try connection.query(
                    "SELECT \(BasketStore.columns), pending_units, confirmed_units FROM baskets WHERE id = $1", [.text(basketId)])
                let row = try rows.first.map(BasketStore.row)
                var snapshot = PostgresBasketSnapshot(
                    row: row, pendingUnits: rows.first?["pending_units"].int ?? 0, confirmedUnits: rows.first?["confirmed_units"].int ?? 0)
                // A hostile `updated_at` (infinity, far future) must not fail the read: clamped.
                let age = """
                    CASE WHEN isfinite(updated_at) THEN LEAST(GREATEST(EXTRACT(EPOCH FROM now() - updated_at), 0), 1e12)::bigint
                         ELSE 1000000000000 END
                    """
                // Active ones, those Redis holds, and (full) those changed within the retention.
                let window =
                    full
                    ? "(status IN ('pending', 'confirmed') OR id = ANY($2::text[]) OR updated_at > now() - make_interval(secs => $3))"
                    : "(status IN ('pending', 'confirmed') OR id = ANY($2::text[]))"
                let parameters: [PostgresValue] = [.text(basketId), .textArray(redisIds)] + (full ? [.int(retention)] : [])
                for reservation in try connection.query(
                    "SELECT id, \(ReservationColumns.select), \(age) AS age FROM reservations WHERE basket_id = $1 AND \(window)",
                    parameters)
                {
                    guard let id = reservation["id"].string else { continue }
                    guard let record = ReservationColumns.record(reservation) else {
                        // Never skipped silently: the basket's repair fails (counted, retried with
                        // backoff) and every other basket goes on.
                        throw BasketStoreError.malformedRow("reservation \(id) of basket \(basketId)")
                    }
                    snapshot.reservations[id] = PostgresReservation(record: record, ageSeconds: reservation["age"].int ?? 0)
                }
                guard full else { return snapshot }
                let payments = try connection.query(
                    """
                    SELECT p.external_id, p.reservation_id, p.outcome, p.kind, p.payment_id,
                           LEAST(GREATEST(EXTRACT(EPOCH FROM now() - p.received_at), 0), 1e12)::bigint AS age,
                           (p.received_at < r.expires_at) AS in_time
                    FROM payments p JOIN reservations r ON r.id = p.reservation_id
                    WHERE r.basket_id = $1 AND p.received_at > now() - make_interval(secs => $2)
                    """, [.text(basketId), .int(Retention.webhookClaimSeconds)])
                for payment in payments {
                    guard let event = payment["external_id"].string, let reservation = payment["reservation_id"].string else { continue }
                    snapshot.claims.append(
                        WebhookClaim(
                            eventId: event, reservationId: reservation, outcome: payment["outcome"].string ?? "processed",
                            ageSeconds: payment["age"].int ?? 0))
                    // `received_at` is when the reconciler recorded it, never before it arrived: in
                    // time by it is in time for sure.
                    if payment["kind"].string == "payment.succeeded", payment["outcome"].string == "unknown_reservation",
                        payment["in_time"].string == "t"
                    {
                        snapshot.paidWhileLost[reservation] = payment["payment_id"].string ?? ""
                    }
                }
                return snapshot
            }
        }
    }

    /// Every reservation of `basketId` Redis holds (active or still retained), by id. Reservations
    /// have no per-basket index, so this scans the partition's reservation keys: its cost grows
    /// with the partition's keys (a sixteenth of the store), paid only by a repair.
    func redisReservations(of basketId: String, partition: Int) async throws -> [String: ReservationRecord] {
        var ids: [String] = []
        var cursor = "0"
        let prefix = Keyspace.reservation("", partition: partition)
        repeat {
            let reply = try await redis.send(
                "SCAN", .string(cursor), "MATCH", .string(Keyspace.reservation("*", partition: partition)), "COUNT", 1000, "TYPE", "hash")
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string else { throw StoreReplyError("scan", reply) }
            for key in parts[1].array ?? [] {
                if let key = key.string, key.hasPrefix(prefix) { ids.append(String(key.dropFirst(prefix.count))) }
            }
            cursor = next
        } while cursor != "0"
        var found: [String: ReservationRecord] = [:]
        for start in stride(from: 0, to: ids.count, by: 5000) {
            let slice = ids[start..<min(start + 5000, ids.count)]
            let replies = try await redis.pipeline(slice.map { ReadReservationCall(reservationId: $0, partition: partition).command })
            for (id, reply) in zip(slice, replies) {
                // A hash that is not a readable reservation is not one of ours: it holds no units.
                guard let record = (try? reply.get()).flatMap({ try? ReadReservationCall.decode($0) }) ?? nil else { continue }
                if record.basketId == basketId { found[id] = record }
            }
        }
        return found
    }

    static func newToken() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<2).map { _ in String(generator.next() as UInt64, radix: 16) }.joined(separator: "-")
    }

    func oversold(_ basketId: String, by units: Int, capacity: Int) {
        Counter(label: "reconciler_oversells_found_total").increment()
        logger.error(
            "basket oversold: reservations hold more units than its capacity; it stays closed to new reservations",
            metadata: ["basket": "\(basketId)", "over_by": "\(units)", "capacity": "\(capacity)"])
    }
}
