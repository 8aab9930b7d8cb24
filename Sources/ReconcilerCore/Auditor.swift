import PostgresClient
import RedisClient
import ReservationCore

/// One difference between Redis and Postgres for one basket.
public struct Drift: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case missingInRedis = "missing_in_redis"
        case missingInPostgres = "missing_in_postgres"
        case counters
        case reservations
    }

    public let basketId: String
    public let kind: Kind
    public let detail: String

    public var description: String { "basket \(basketId): \(kind.rawValue): \(detail)" }
}

extension Reconciler {
    struct PostgresBasket {
        var row: BasketRow
        var pending: Int
        var confirmed: Int
    }

    /// Compares every basket in Redis with Postgres. With `repair`, each drifted basket is taken
    /// out of service, its events drained, and its Redis state rebuilt from Postgres.
    public func audit(repair: Bool) async throws -> [Drift] {
        let drifts = try await findDrifts()
        guard repair, !drifts.isEmpty else { return drifts }
        // A basket can look drifted only because its latest events are not applied yet: drain
        // first and repair only what still differs, so healthy baskets never go out of service.
        _ = try await drain()
        let confirmed = Set(try await findDrifts().map(\.basketId))
        for drift in drifts where confirmed.contains(drift.basketId) {
            try await repairBasket(drift.basketId, reason: drift)
            repaired(drift)
        }
        return drifts.filter { confirmed.contains($0.basketId) }
    }

    func findDrifts() async throws -> [Drift] {
        let postgresBaskets = try await postgres.withConnection { connection -> [String: PostgresBasket] in
            var result: [String: PostgresBasket] = [:]
            for row in try connection.query("""
                SELECT b.id, b.stock, b.capacity, b.hold_seconds, b.max_per_consumer, b.redis_seq, b.version,
                       COALESCE(SUM(r.quantity) FILTER (WHERE r.status = 'pending'), 0) AS pending,
                       COALESCE(SUM(r.quantity) FILTER (WHERE r.status = 'confirmed'), 0) AS confirmed
                FROM baskets b LEFT JOIN reservations r ON r.basket_id = b.id
                GROUP BY b.id
                """) {
                let basket = BasketStore.row(row)
                result[basket.id] = PostgresBasket(row: basket, pending: row["pending"].int ?? 0, confirmed: row["confirmed"].int ?? 0)
            }
            return result
        }
        var ids = Set(postgresBaskets.keys)
        for partition in 0..<Keyspace.partitionCount {
            for member in try await redis.send("SMEMBERS", .string(Keyspace.basketIndex(partition))).array ?? [] {
                if let id = member.string { ids.insert(id) }
            }
        }
        let ordered = ids.sorted()
        let replies = try await redis.pipeline(ordered.map { id in
            ["HMGET", .string(Keyspace.basket(id, partition: Keyspace.partition(ofBasket: id))), "stock", "pending", "confirmed", "capacity"]
        })
        var drifts: [Drift] = []
        var consistent: Set<String> = []
        for (id, reply) in zip(ordered, replies) {
            let fields = (try? reply.get())?.array ?? []
            let redisValues = fields.map { $0.int }
            let inRedis = (redisValues.first ?? nil) != nil
            guard let postgres = postgresBaskets[id] else {
                if inRedis { drifts.append(Drift(basketId: id, kind: .missingInPostgres, detail: "redis has the basket, postgres has no row")) }
                continue
            }
            guard inRedis, redisValues.count == 4 else {
                drifts.append(Drift(basketId: id, kind: .missingInRedis,
                                    detail: "postgres has stock=\(postgres.row.stock) capacity=\(postgres.row.capacity); redis has no basket"))
                continue
            }
            let redisTuple = redisValues.map { $0 ?? -1 }
            let postgresTuple = [postgres.row.stock, postgres.pending, postgres.confirmed, postgres.row.capacity]
            if redisTuple != postgresTuple || redisTuple[0] + redisTuple[1] + redisTuple[2] != redisTuple[3] {
                drifts.append(Drift(basketId: id, kind: .counters, detail:
                    "redis stock=\(redisTuple[0]) pending=\(redisTuple[1]) confirmed=\(redisTuple[2]) capacity=\(redisTuple[3]); "
                    + "postgres stock=\(postgresTuple[0]) pending=\(postgresTuple[1]) confirmed=\(postgresTuple[2]) capacity=\(postgresTuple[3])"))
            } else {
                consistent.insert(id)
            }
        }
        // Every active reservation Postgres knows must exist in Redis with the same status.
        let active = try await postgres.query(
            "SELECT id, basket_id, status FROM reservations WHERE status IN ('pending', 'confirmed') ORDER BY basket_id")
        let checked = active.filter { consistent.contains($0["basket_id"].string ?? "") }
        var mismatches: [String: Int] = [:]
        var totals: [String: Int] = [:]
        for chunk in stride(from: 0, to: checked.count, by: 5000) {
            let slice = checked[chunk..<min(chunk + 5000, checked.count)]
            let statuses = try await redis.pipeline(slice.map { row in
                let id = row["id"].string ?? ""
                let partition = ReservationIdGenerator.partition(of: id) ?? Keyspace.partition(ofForeignId: id)
                return ["HGET", .string(Keyspace.reservation(id, partition: partition)), "status"]
            })
            for (row, status) in zip(slice, statuses) {
                let basketId = row["basket_id"].string ?? ""
                totals[basketId, default: 0] += 1
                if (try? status.get())?.string != row["status"].string { mismatches[basketId, default: 0] += 1 }
            }
        }
        for (basketId, count) in mismatches.sorted(by: { $0.key < $1.key }) {
            drifts.append(Drift(basketId: basketId, kind: .reservations,
                                detail: "\(count) of \(totals[basketId] ?? 0) active reservations are missing or differ in redis"))
        }
        return drifts
    }

    /// Rebuilds one basket's Redis state from Postgres. The basket is out of service (`maint`)
    /// from the first step to the last, so no reservation, cancel, payment or expiry races it;
    /// clients get 503 for that moment and may retry.
    func repairBasket(_ basketId: String, reason: Drift) async throws {
        let partition = Keyspace.partition(ofBasket: basketId)
        let basketKey = Keyspace.basket(basketId, partition: partition)
        _ = try await redis.send("HSET", .string(basketKey), "maint", "1")
        do {
            try await repairUnderMaintenance(basketId, partition: partition, reason: reason)
        } catch {
            // Never leave a basket out of service: the next audit retries the repair.
            _ = try? await redis.send("HDEL", .string(basketKey), "maint")
            throw error
        }
    }

    private func repairUnderMaintenance(_ basketId: String, partition: Int, reason: Drift) async throws {
        let basketKey = Keyspace.basket(basketId, partition: partition)
        // Everything the gateway recorded for this basket before `maint` reaches Postgres first.
        _ = try await drain(streams: [Keyspace.stream(partition)])
        let redisState = try await redis.send("HMGET", .string(basketKey), "stock", "capacity", "hold", "max", "seq").array ?? []

        struct Truth: Sendable {
            var row: BasketRow
            var reservations: [[String?]]
        }
        let truth = try await postgres.withConnection { connection -> Truth? in
            if try BasketStore.read(connection, basketId) == nil, let stock = redisState[0].int, let capacity = redisState[1].int {
                // Postgres lost the basket (its events are gone): keep what Redis knows.
                try BasketStore.update(connection, basketId, create: BasketRow(
                    id: basketId, stock: stock, capacity: capacity, holdSeconds: redisState[2].int ?? 600,
                    maxPerConsumer: redisState[3].int ?? 1, redisSeq: redisState[4].int ?? 0, version: 1)) { _ in nil }
            }
            guard var row = try BasketStore.read(connection, basketId) else { return nil }
            let reservations = try connection.query("""
                SELECT id, consumer_id, quantity, status, (extract(epoch FROM expires_at) * 1000)::bigint AS exp, payment_id
                FROM reservations WHERE basket_id = $1 ORDER BY id
                """, [.text(basketId)]).map { $0.cells.map(\.raw) }
            var pending = 0
            var confirmed = 0
            for reservation in reservations {
                let quantity = Int(reservation[2] ?? "0") ?? 0
                if reservation[3] == "pending" { pending += quantity }
                if reservation[3] == "confirmed" { confirmed += quantity }
            }
            // Units are conserved: what is not held by a reservation is stock.
            var stock = row.capacity - pending - confirmed
            var capacity = row.capacity
            if stock < 0 {
                stock = 0
                capacity = pending + confirmed
            }
            if stock != row.stock || capacity != row.capacity {
                row = try BasketStore.update(connection, basketId) { current in
                    var next = current
                    next.stock = stock
                    next.capacity = capacity
                    return next
                }
            }
            return Truth(row: row, reservations: reservations)
        }
        guard let truth else {
            _ = try await redis.send("HDEL", .string(basketKey), "maint")
            return
        }

        let prefix = Keyspace.prefix(partition)
        let keys: [RedisArgument] = [.string(basketKey), .string(Keyspace.holds(partition)), .string(Keyspace.stream(partition)),
                                     .string(Keyspace.basketIndex(partition))]
        for start in stride(from: 0, to: truth.reservations.count, by: 1000) {
            var arguments: [RedisArgument] = ["reservations", .string(prefix), .string(basketId), .int(Retention.finishedReservationSeconds)]
            for reservation in truth.reservations[start..<min(start + 1000, truth.reservations.count)] {
                arguments += reservation.map { .string($0 ?? "") }
            }
            _ = try await redis.evalSHA(ReservationScripts.repair, keys: keys, arguments: arguments)
        }

        // Consumer counters: set from active reservations; stale ones found by SCAN are deleted.
        var units: [String: Int] = [:]
        var pending = 0
        var confirmed = 0
        for reservation in truth.reservations where reservation[3] == "pending" || reservation[3] == "confirmed" {
            let quantity = Int(reservation[2] ?? "0") ?? 0
            units[Keyspace.consumerUnits(basketId: basketId, consumerId: reservation[1] ?? "", partition: partition), default: 0] += quantity
            if reservation[3] == "pending" { pending += quantity } else { confirmed += quantity }
        }
        var cursor = "0"
        repeat {
            let reply = try await redis.send("SCAN", .string(cursor), "MATCH", .string(prefix + ":c:" + basketId + "/*"), "COUNT", 1000)
            guard let parts = reply.array, parts.count == 2 else { break }
            cursor = parts[0].string ?? "0"
            for key in parts[1].array ?? [] {
                if let key = key.string, units[key] == nil { units[key] = 0 }
            }
        } while cursor != "0"

        let seq = max(redisState[4].int ?? 0, truth.row.redisSeq) + 1
        var arguments: [RedisArgument] = [
            "basket", .string(prefix), .string(basketId), .int(truth.row.stock), .int(pending), .int(confirmed),
            .int(truth.row.capacity), .int(truth.row.holdSeconds), .int(truth.row.maxPerConsumer), .int(seq), .string(reason.kind.rawValue),
        ]
        for (key, count) in units.sorted(by: { $0.key < $1.key }) { arguments += [.string(key), .int(count)] }
        _ = try await redis.evalSHA(ReservationScripts.repair, keys: keys, arguments: arguments)
    }
}
