import Foundation
import GatewayCore
import Logging
import NIOHTTP1
import PostgresClient
import ReconcilerCore
import RedisClient
import ReservationCore
import Synchronization
import TestSupport
import Testing

/// Repairs that know which side is behind: the union of Redis and Postgres, exclusive leases,
/// oversells reported and kept closed.
@Suite("Repair to the union, exclusive and fenced")
struct RepairUnionTests {
    static func audit(_ fixture: ReconcilerFixture) async throws -> (status: Int32, output: String) {
        try await ProductProcess.run("reconciler", ["audit"], environment: fixture.environment)
    }

    static func once(_ fixture: ReconcilerFixture) async throws {
        let result = try await ProductProcess.run("reconciler", ["once"], environment: fixture.environment)
        #expect(result.status == 0, "\(result.output)")
    }

    static func redisStatuses(_ fixture: ReconcilerFixture, _ ids: [String]) async throws -> [String: String] {
        var statuses: [String: String] = [:]
        for id in ids {
            statuses[id] = try await fixture.gateway.request(.GET, "/v1/reservations/\(id)").json?["status"]?.stringValue
        }
        return statuses
    }

    @Test("Postgres behind (its rows deleted after a drain): the repair writes Redis's reservations back to Postgres")
    func postgresBehind() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("pgbehind")
        try await fixture.gateway.createBasket(basketId, stock: 10)
        var ids: [String] = []
        for consumer in 0..<4 {
            let response = try await fixture.gateway.reserve(basketId, consumer: "c\(consumer)")
            ids.append(try #require(response.json?["reservationId"]?.stringValue))
        }
        #expect(try await fixture.gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: ids[0]).status == 200)
        _ = try await fixture.gateway.request(.DELETE, "/v1/reservations/\(ids[3])")
        try await Self.once(fixture)
        #expect(try await Self.audit(fixture).status == 0)

        // Postgres restored from an older backup: the reservations are gone, their events acknowledged.
        _ = try await fixture.postgres.execute("DELETE FROM reservations WHERE basket_id = $1", [.text(basketId)])
        let report = try await Self.audit(fixture)
        #expect(report.status == 1 && report.output.contains(basketId), "\(report.output)")
        try await Self.once(fixture)
        #expect(try await Self.audit(fixture).status == 0)
        let postgres = try await fixture.postgresReservations(basketId)
        #expect(postgres == (try await Self.redisStatuses(fixture, ids)))
        #expect(postgres[ids[0]] == "confirmed" && postgres[ids[1]] == "pending" && postgres[ids[3]] == "cancelled")
        // Nothing sold twice: 3 units stay held, 7 sell.
        let basket = try await fixture.gateway.basket(basketId)
        #expect(basket["stock"]?.int == 7 && basket["pending"]?.int == 2 && basket["confirmed"]?.int == 1)
        #expect(try await fixture.postgresBasket(basketId)?.stock == 7)
        await fixture.stop()
    }

    @Test("an oversell (Redis lost a reservation Postgres has, and re-sold its unit) is reported with exit 2 and the basket stays closed")
    func oversellReported() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("oversold")
        let partition = Keyspace.partition(ofBasket: basketId)
        try await fixture.gateway.createBasket(basketId, stock: 3)
        var ids: [String] = []
        for consumer in 0..<3 {
            let response = try await fixture.gateway.reserve(basketId, consumer: "c\(consumer)")
            ids.append(try #require(response.json?["reservationId"]?.stringValue))
        }
        try await Self.once(fixture)
        // Redis loses its last write (as with `appendfsync everysec` and a crash): the third
        // reservation is gone from Redis, the stock it held is back.
        let basketKey = Keyspace.basket(basketId, partition: partition)
        _ = try await fixture.redis.send("DEL", .string(Keyspace.reservation(ids[2], partition: partition)))
        _ = try await fixture.redis.send("HSET", .string(basketKey), "stock", 1, "pending", 2)
        _ = try await fixture.redis.send("HDEL", .string(Keyspace.consumerUnits(basketId: basketId, partition: partition)), "c2")
        _ = try await fixture.redis.send("ZREM", .string(Keyspace.holds(partition)), .string(ids[2]))
        // ... and sells that unit again.
        #expect(try await fixture.gateway.reserve(basketId, consumer: "late").status == 201)
        try await Self.once(fixture)

        let report = try await Self.audit(fixture)
        #expect(report.status == 2, "\(report.output)")
        #expect(report.output.contains("oversold") && report.output.contains(basketId), "\(report.output)")
        // The union holds 4 units of capacity 3: capacity is not raised to hide it.
        let basket = try await fixture.gateway.basket(basketId)
        #expect(basket["capacity"]?.int == 3 && basket["stock"]?.int == 0 && basket["pending"]?.int == 4)
        #expect(try await fixture.postgresBasket(basketId)?.capacity == 3)
        #expect(try await fixture.postgresReservations(basketId).count == 4)
        // Closed to new reservations, even after one unit comes back: the union still holds 3 of 3.
        #expect(try await fixture.gateway.reserve(basketId, consumer: "another").errorCode == "sold_out")
        #expect(try await fixture.gateway.request(.DELETE, "/v1/reservations/\(ids[0])").status == 200)
        #expect(try await fixture.gateway.reserve(basketId, consumer: "yet-another").errorCode == "sold_out")
        // A second cancel brings the union below capacity: exactly one unit sells, and the next
        // repair leaves the basket balanced.
        #expect(try await fixture.gateway.request(.DELETE, "/v1/reservations/\(ids[1])").status == 200)
        #expect(try await fixture.gateway.reserve(basketId, consumer: "one-more").status == 201)
        #expect(try await fixture.gateway.reserve(basketId, consumer: "too-many").errorCode == "sold_out")
        try await Self.once(fixture)
        #expect(try await Self.audit(fixture).status == 0)
        await fixture.stop()
    }

    @Test("a webhook redelivered after FLUSHALL and the rebuild is a duplicate; one payments row")
    func webhookAfterFlush() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("whflush")
        try await fixture.gateway.createBasket(basketId, stock: 5)
        let reserved = try await fixture.gateway.reserve(basketId, consumer: "payer")
        let id = try #require(reserved.json?["reservationId"]?.stringValue)
        let eventId = TestEnvironment.uniqueId("evt")
        #expect(try await fixture.gateway.deliverPayment(eventId: eventId, reservationId: id).json?["outcome"]?.stringValue == "confirmed")
        try await Self.once(fixture)
        _ = try await fixture.redis.send("FLUSHALL")
        try await Self.once(fixture)
        let again = try await fixture.gateway.deliverPayment(eventId: eventId, reservationId: id)
        #expect(again.status == 200 && again.json?["status"]?.stringValue == "duplicate", "\(again.text)")
        try await Self.once(fixture)
        let rows = try await fixture.postgres.query("SELECT count(*) AS n FROM payments WHERE external_id = $1", [.text(eventId)])
        #expect(rows[0]["n"].int == 1)
        #expect(try await fixture.gateway.request(.GET, "/v1/reservations/\(id)").json?["status"]?.stringValue == "confirmed")
        await fixture.stop()
    }

    @Test("a payment that arrives after Redis lost its reservation and before the rebuild confirms it at the rebuild; it does not expire")
    func paymentWhileLost() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("paidlost")
        try await fixture.gateway.createBasket(basketId, stock: 5)
        let id = try #require(try await fixture.gateway.reserve(basketId, consumer: "payer").json?["reservationId"]?.stringValue)
        try await Self.once(fixture)
        _ = try await fixture.redis.send("FLUSHALL")
        let eventId = TestEnvironment.uniqueId("evt")
        let answer = try await fixture.gateway.deliverPayment(eventId: eventId, reservationId: id)
        #expect(answer.status == 200 && answer.json?["outcome"]?.stringValue == "unknown_reservation", "\(answer.text)")
        try await Self.once(fixture)
        #expect(try await fixture.gateway.request(.GET, "/v1/reservations/\(id)").json?["status"]?.stringValue == "confirmed")
        #expect(try await fixture.postgresReservations(basketId)[id] == "confirmed")
        let basket = try await fixture.gateway.basket(basketId)
        #expect(basket["confirmed"]?.int == 1 && basket["pending"]?.int == 0 && basket["stock"]?.int == 4)
        #expect(try await fixture.gateway.deliverPayment(eventId: eventId, reservationId: id).json?["status"]?.stringValue == "duplicate")
        try await Self.once(fixture)
        #expect(try await Self.audit(fixture).status == 0)
        await fixture.stop()
    }

    @Test("two reconcilers repairing one drifted basket at once under 16 reserving clients and payments: nothing lost, reverted or sold twice")
    func overlappingRepairs() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("overlap")
        let partition = Keyspace.partition(ofBasket: basketId)
        let capacity = 100_000
        // Holds of a day: on a loaded machine this test can outlast the default 10 minutes, and
        // holds expiring mid-test would change the counts it checks.
        try await fixture.gateway.createBasket(basketId, stock: capacity, holdSeconds: 86_400)
        let first = fixture.reconciler("first")
        let second = fixture.reconciler("second")
        let tally = LoadTally()

        let load = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<16 {
                    group.addTask {
                        var attempt = 0
                        while !tally.stop.load(ordering: .relaxed) {
                            attempt += 1
                            let response = try await fixture.gateway.reserve(basketId, consumer: "c\(client)-\(attempt)")
                            guard response.status == 201, let id = response.json?["reservationId"]?.stringValue else { continue }
                            tally.granted.withLock { $0.append(id) }
                            if attempt % 2 == 0 {
                                let payment = try await fixture.gateway.deliverPayment(eventId: "evt-\(id)", reservationId: id)
                                if payment.json?["outcome"]?.stringValue == "confirmed" { tally.paid.withLock { $0.append(id) } }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        let basketKey = Keyspace.basket(basketId, partition: partition)
        var outcomes: [RepairResult] = []
        for round in 0..<6 {
            // Wait for some traffic (no wall-clock window: progress, polled).
            let before = tally.granted.withLock { $0.count }
            #expect(try await eventually { tally.granted.withLock { $0.count } >= before + 20 })
            // Drift: a corrupted counter; two repairs race for it.
            _ = try await fixture.redis.send("HINCRBY", .string(basketKey), "stock", 50)
            let drift = Drift(basketId: basketId, kind: .counters, detail: "test round \(round)")
            async let a = first.repairBasket(basketId, reason: drift)
            async let b = second.repairBasket(basketId, reason: drift)
            outcomes += try await [a, b]
        }
        tally.stop.store(true, ordering: .relaxed)
        try await load.value
        #expect(outcomes.contains(.repaired(oversoldBy: 0)))
        #expect(!outcomes.contains { if case .repaired(let over) = $0 { return over > 0 } else { return false } })

        try await fixture.once()
        let grantedIds = tally.granted.withLock { $0 }
        let paidIds = tally.paid.withLock { $0 }
        let postgres = try await fixture.postgresReservations(basketId)
        let missing = grantedIds.filter { postgres[$0] == nil }
        #expect(missing.isEmpty, "201s missing from postgres: \(missing.prefix(5))")
        let reverted = paidIds.filter { postgres[$0] != "confirmed" }
        #expect(reverted.isEmpty, "paid reservations not confirmed in postgres: \(reverted.prefix(5))")
        let redisStatuses = try await Self.redisStatuses(fixture, paidIds)
        #expect(redisStatuses.values.allSatisfy { $0 == "confirmed" }, "a paid reservation reverted in redis")
        // Books: what is held is exactly the reservations that hold it, on both sides.
        let basket = try await fixture.gateway.basket(basketId)
        let held = postgres.values.filter { $0 == "pending" || $0 == "confirmed" }.count
        #expect(basket["pending"]?.int == postgres.values.filter { $0 == "pending" }.count)
        #expect(basket["confirmed"]?.int == postgres.values.filter { $0 == "confirmed" }.count)
        #expect(basket["stock"]?.int == capacity - held)
        #expect(try await fixture.postgresBasket(basketId)?.stock == capacity - held)
        #expect(try await fixture.reconciler().audit(repair: false).isEmpty)
        await fixture.stop()
    }
}
