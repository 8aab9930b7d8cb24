import Logging
import Metrics
import PostgresClient
import RedisClient
import ReservationCore
import ReservationScripts

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
///   lost its last second) is written back to Redis, with its webhook claims. Where both have it,
///   the further status wins (pending < confirmed < cancelled | expired), as in `EventApplier`.
/// - Counters come from that union. Capacity comes from whichever side saw the basket's latest
///   change (`seq`); it is never raised to absorb an oversell.
extension Reconciler {
    /// Repairs one basket, if no other repair holds it.
    @discardableResult
    public func repairBasket(_ basketId: String, reason: Drift) async throws -> RepairResult {
        let lease = RepairLease(token: Self.newToken(), milliseconds: configuration.repairLeaseMilliseconds)
        switch try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: lease)) {
        case .acquired: break
        case .busy(let left):
            logger.info("basket repair skipped: another repair holds it", metadata: ["basket": "\(basketId)", "lease_left_ms": "\(left)"])
            return .busy
        case .released, .lost:
            throw StoreReplyError("repair_lease", .null)
        }
        do {
            let result = try await repairUnderLease(basketId, reason: reason, lease: lease)
            if result == .leaseLost {
                logger.warning("basket repair lost its lease; another repair took over", metadata: ["basket": "\(basketId)"])
            }
            return result
        } catch {
            // Back in service only if this repair still owns it (the release checks the token).
            // A basket left half-written is safe to sell from: the reserve script never sells
            // more than capacity - pending - confirmed, and the next audit repairs it again.
            _ = try? await redis.run(RepairLeaseCall(basketId: basketId, mode: .release, lease: lease))
            throw error
        }
    }

    private func repairUnderLease(_ basketId: String, reason: Drift, lease: RepairLease) async throws -> RepairResult {
        let partition = Keyspace.partition(ofBasket: basketId)
        // What the gateway recorded before the lease reaches Postgres first (events another
        // reconciler holds in flight may not: the union below covers them, since Redis has them).
        _ = try await drain(streams: [Keyspace.stream(partition)])
        guard try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: lease)) == .acquired else {
            return .leaseLost
        }

        // Redis's side: the basket (frozen while we hold the lease) and every reservation of it.
        let redisBasket =
            try await redis.send(
                "HMGET", .string(Keyspace.basket(basketId, partition: partition)), "stock", "capacity", "hold", "max", "seq"
            ).array ?? []
        let redisSeq = redisBasket.count == 5 ? (redisBasket[4].int ?? 0) : 0
        let redisCapacity = redisBasket.count == 5 ? redisBasket[1].int : nil
        let inRedis = try await redisReservations(of: basketId, partition: partition)

        // Postgres's side, and the union written into it (rank-monotone, like every event).
        struct PostgresSide: Sendable {
            var row: BasketRow?
            var reservations: [String: ReservationRecord]
            var claims: [(eventId: String, reservationId: String, outcome: String, ageSeconds: Int)]
            /// Payments that succeeded in time but found no reservation (Redis had lost it and
            /// the repair had not rebuilt it yet): reservation id -> payment id.
            var paidWhileLost: [String: String]
        }
        let postgresSide = try await postgres.withConnection { connection -> PostgresSide in
            let row = try BasketStore.read(connection, basketId)
            var reservations: [String: ReservationRecord] = [:]
            for row in try connection.query(
                "SELECT id, \(ReservationColumns.select) FROM reservations WHERE basket_id = $1", [.text(basketId)])
            {
                guard let id = row["id"].string else { continue }
                guard let record = ReservationColumns.record(row) else {
                    throw BasketStoreError.malformedRow("reservation \(id)")
                }
                reservations[id] = record
            }
            let payments = try connection.query(
                """
                SELECT p.external_id, p.reservation_id, p.outcome, p.kind, p.payment_id,
                       EXTRACT(EPOCH FROM now() - p.received_at)::bigint AS age,
                       (p.received_at < r.expires_at) AS in_time
                FROM payments p JOIN reservations r ON r.id = p.reservation_id
                WHERE r.basket_id = $1 AND p.received_at > now() - make_interval(secs => $2)
                """, [.text(basketId), .int(Retention.webhookClaimSeconds)])
            var claims: [(eventId: String, reservationId: String, outcome: String, ageSeconds: Int)] = []
            var paidWhileLost: [String: String] = [:]
            for row in payments {
                guard let event = row["external_id"].string, let reservation = row["reservation_id"].string else { continue }
                claims.append((event, reservation, row["outcome"].string ?? "processed", row["age"].int ?? 0))
                // `received_at` is when the reconciler recorded it, never before it arrived: in
                // time by it is in time for sure.
                if row["kind"].string == "payment.succeeded", row["outcome"].string == "unknown_reservation",
                    row["in_time"].string == "t"
                {
                    paidWhileLost[reservation] = row["payment_id"].string ?? ""
                }
            }
            return PostgresSide(row: row, reservations: reservations, claims: claims, paidWhileLost: paidWhileLost)
        }

        var union = Self.union(redis: inRedis, postgres: postgresSide.reservations)
        // A payment that arrived in time while Redis had lost its reservation was answered
        // `unknown_reservation`; the reservation it paid for is confirmed now instead of expiring.
        for (reservationId, paymentId) in postgresSide.paidWhileLost {
            guard var record = union[reservationId], record.status == .pending else { continue }
            record.status = .confirmed
            record.paymentId = record.paymentId ?? paymentId
            union[reservationId] = record
            logger.warning(
                "reservation paid while redis had lost it confirmed by the repair",
                metadata: ["basket": "\(basketId)", "reservation": "\(reservationId)"])
        }
        let missingInPostgres = union.filter { postgresSide.reservations[$0.key] != $0.value }
        let row = postgresSide.row
        try await postgres.withConnection { connection in
            if row == nil, redisBasket.count == 5, let stock = redisBasket[0].int, let capacity = redisBasket[1].int {
                // Postgres lost the basket (its events are gone): start its row from Redis.
                try BasketStore.update(
                    connection, basketId,
                    create: BasketRow(
                        id: basketId, stock: max(stock, 0), capacity: capacity, holdSeconds: redisBasket[2].int ?? 600,
                        maxPerConsumer: redisBasket[3].int ?? 1, redisSeq: redisSeq, version: 1)
                ) { _ in nil }
            }
            if !missingInPostgres.isEmpty {
                try EventApplier.write(EventApplier.Changes(reservations: missingInPostgres), on: connection)
            }
            // The row's unit totals recomputed from its reservations (rows edited by hand, or
            // written before the row existed, are counted again), under the basket's lock.
            try connection.transaction { connection in
                try EventApplier.lockBaskets([basketId], on: connection)
                try connection.execute(
                    """
                    UPDATE baskets SET
                        pending_units = (SELECT COALESCE(sum(quantity), 0) FROM reservations WHERE basket_id = $1 AND status = 'pending'),
                        confirmed_units = (SELECT COALESCE(sum(quantity), 0) FROM reservations WHERE basket_id = $1 AND status = 'confirmed')
                    WHERE id = $1
                    """, [.text(basketId)])
            }
        }
        guard let basketRow = try await postgres.withConnection({ try BasketStore.read($0, basketId) }) else {
            // Neither side knows the basket any more: nothing to rebuild.
            _ = try await redis.run(RepairLeaseCall(basketId: basketId, mode: .release, lease: lease))
            return .repaired(oversoldBy: 0)
        }

        // Redis gets every reservation of the union it lacks or holds differently.
        let missingInRedis = union.filter { inRedis[$0.key] != $0.value }.sorted { $0.key < $1.key }.map { (id: $0.key, record: $0.value) }
        for start in stride(from: 0, to: missingInRedis.count, by: 1000) {
            let chunk = Array(missingInRedis[start..<min(start + 1000, missingInRedis.count)])
            if try await redis.run(RepairReservationsCall(chunk, basketId: basketId, lease: lease)) == .leaseLost { return .leaseLost }
        }
        // Webhook claims Redis lost come back from `payments`, so a redelivery stays a duplicate.
        // SET NX: a claim that exists is never touched; a claim is right whoever writes it.
        if !postgresSide.claims.isEmpty {
            _ = try await redis.pipeline(
                postgresSide.claims.map { claim in
                    let partition = ReservationIdGenerator.partition(of: claim.reservationId) ?? Keyspace.partition(ofForeignId: claim.reservationId)
                    let ttl = max(Retention.webhookClaimSeconds - claim.ageSeconds, 1)
                    return [
                        "SET", .string(Keyspace.webhookClaim(eventId: claim.eventId, partition: partition)), .string(claim.outcome), "NX", "EX",
                        .int(ttl),
                    ]
                })
        }

        // Counters from the union; capacity from the side that saw the latest change.
        var units: [String: Int] = [:]
        var pending = 0
        var confirmed = 0
        for record in union.values where record.status.isActive {
            units[record.consumerId] = Self.units(units[record.consumerId] ?? 0, record.quantity)
            if record.status == .pending {
                pending = Self.units(pending, record.quantity)
            } else {
                confirmed = Self.units(confirmed, record.quantity)
            }
        }
        let capacity = (redisSeq >= basketRow.redisSeq ? redisCapacity : nil) ?? basketRow.capacity
        let held = Self.units(pending, confirmed)
        let (over, overflow) = held.subtractingReportingOverflow(capacity)
        let oversoldBy = overflow ? Int.max : max(over, 0)
        let state = BasketState(
            stock: oversoldBy > 0 ? 0 : capacity - held, pending: pending, confirmed: confirmed, capacity: capacity,
            holdSeconds: redisBasket.count == 5 ? (redisBasket[2].int ?? basketRow.holdSeconds) : basketRow.holdSeconds,
            maxPerConsumer: redisBasket.count == 5 ? (redisBasket[3].int ?? basketRow.maxPerConsumer) : basketRow.maxPerConsumer)
        let seq = max(redisSeq, basketRow.redisSeq) + 1
        let call = RepairBasketCall(
            basketId: basketId, state: state, seq: seq, reason: reason.kind.rawValue, unitsByConsumer: units, lease: lease)
        if try await redis.run(call) == .leaseLost { return .leaseLost }
        if oversoldBy > 0 { oversold(basketId, by: oversoldBy, capacity: capacity) }
        return .repaired(oversoldBy: oversoldBy)
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

    /// Both sides merged: every reservation either knows, at the further status of the two
    /// (a payment id, once either knows it, is kept).
    static func union(redis: [String: ReservationRecord], postgres: [String: ReservationRecord]) -> [String: ReservationRecord] {
        var union = postgres
        for (id, record) in redis {
            guard let known = union[id] else {
                union[id] = record
                continue
            }
            var merged = record.status.rank > known.status.rank ? record : known
            merged.paymentId = merged.paymentId ?? record.paymentId ?? known.paymentId
            union[id] = merged
        }
        return union
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
