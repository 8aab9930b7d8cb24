import PostgresClient
import RedisClient
import ReservationCore
import ReservationScripts

/// Rebuilding a basket: its Redis state written back from Postgres, under `maint`.
extension Reconciler {
    /// Rebuilds one basket's Redis state from Postgres. The basket is out of service (`maint`)
    /// from the first step to the last, so no reservation, cancel, payment or expiry races it;
    /// clients get 503 for that moment and may retry.
    func repairBasket(_ basketId: String, reason: Drift) async throws {
        let partition = Keyspace.partition(ofBasket: basketId)
        try await redis.run(MaintenanceCall(basketId: basketId, inService: false))
        do {
            try await repairUnderMaintenance(basketId, partition: partition, reason: reason)
        } catch {
            // Never leave a basket out of service: the next audit retries the repair.
            _ = try? await redis.run(MaintenanceCall(basketId: basketId, inService: true))
            throw error
        }
    }

    private func repairUnderMaintenance(_ basketId: String, partition: Int, reason: Drift) async throws {
        // Everything the gateway recorded for this basket before `maint` reaches Postgres first.
        _ = try await drain(streams: [Keyspace.stream(partition)])
        let redisState =
            try await redis.send(
                "HMGET", .string(Keyspace.basket(basketId, partition: partition)), "stock", "capacity", "hold", "max", "seq"
            ).array ?? []

        struct Truth: Sendable {
            var row: BasketRow
            var reservations: [(id: String, record: ReservationRecord)]
        }
        let truth = try await postgres.withConnection { connection -> Truth? in
            if try BasketStore.read(connection, basketId) == nil, let stock = redisState[0].int, let capacity = redisState[1].int {
                // Postgres lost the basket (its events are gone): keep what Redis knows.
                try BasketStore.update(
                    connection, basketId,
                    create: BasketRow(
                        id: basketId, stock: stock, capacity: capacity, holdSeconds: redisState[2].int ?? 600,
                        maxPerConsumer: redisState[3].int ?? 1, redisSeq: redisState[4].int ?? 0, version: 1)
                ) { _ in nil }
            }
            guard var row = try BasketStore.read(connection, basketId) else { return nil }
            let reservations = try connection.query(
                """
                SELECT id, \(ReservationColumns.select) FROM reservations WHERE basket_id = $1 ORDER BY id
                """, [.text(basketId)]
            ).compactMap { row -> (id: String, record: ReservationRecord)? in
                guard let id = row["id"].string, let record = ReservationColumns.record(row) else { return nil }
                return (id, record)
            }
            var held = 0
            for (_, record) in reservations where record.status.isActive { held += record.quantity }
            // Units are conserved: what is not held by a reservation is stock.
            var stock = row.capacity - held
            var capacity = row.capacity
            if stock < 0 {
                stock = 0
                capacity = held
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
            try await redis.run(MaintenanceCall(basketId: basketId, inService: true))
            return
        }

        for start in stride(from: 0, to: truth.reservations.count, by: 1000) {
            let chunk = Array(truth.reservations[start..<min(start + 1000, truth.reservations.count)])
            _ = try await redis.run(RepairReservationsCall(chunk, partition: partition))
        }

        var units: [String: Int] = [:]
        var pending = 0
        var confirmed = 0
        for (_, record) in truth.reservations where record.status.isActive {
            units[record.consumerId, default: 0] += record.quantity
            if record.status == .pending { pending += record.quantity } else { confirmed += record.quantity }
        }
        let seq = max(redisState[4].int ?? 0, truth.row.redisSeq) + 1
        let state = BasketState(
            stock: truth.row.stock, pending: pending, confirmed: confirmed, capacity: truth.row.capacity,
            holdSeconds: truth.row.holdSeconds, maxPerConsumer: truth.row.maxPerConsumer)
        try await redis.run(RepairBasketCall(basketId: basketId, state: state, seq: seq, reason: reason.kind.rawValue, unitsByConsumer: units))
    }
}
