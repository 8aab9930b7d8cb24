import Foundation
import NIOHTTP1
import PostgresClient
import RedisClient
import ReservationCore
import TestSupport
import Testing

@testable import ReconcilerCore

/// The review of issue 19's repair: a half-written basket is never put on sale, the repair's
/// last Postgres step never overwrites newer events, a Postgres that lost events is drift, the
/// audit never sets the partition markers, a lost basket nobody knows leaves the lost set.
@Suite("Repair review findings")
struct RepairReviewTests {
    static func basketKey(_ basketId: String) -> String { Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId)) }

    /// Where a repair writes a reservation of `basketId` (its partition).
    static func repairKey(_ id: String, of basketId: String) -> String {
        Keyspace.reservation(id, partition: Keyspace.partition(ofBasket: basketId))
    }

    static func drift(_ basketId: String, _ kind: Drift.Kind = .reservations) -> Drift {
        Drift(basketId: basketId, kind: kind, detail: "test")
    }

    static func audit(_ fixture: ReconcilerFixture) async throws -> (status: Int32, output: String) {
        try await ProductProcess.run("reconciler", ["audit"], environment: fixture.environment)
    }

    @Test("a repair that fails after its first Redis write leaves the basket out of service; the retry finishes it")
    func halfWrittenStaysOutOfService() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("half")
        try await fixture.gateway.createBasket(basketId, stock: 1_000)
        // One more than a repair chunk: the repair writes Redis's reservations in two scripts.
        let count = Reconciler.repairChunk + 1
        let ids = try await withThrowingTaskGroup(of: [String].self) { group in
            for client in 0..<8 {
                group.addTask {
                    try await RepairIsolationTests.reserve(
                        fixture, basketId, stride(from: client, to: count, by: 8).map { "half-\($0)" })
                }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }.sorted()
        try await fixture.once()
        // Redis lost every reservation (its counters kept their units; the last one's key is now
        // of the wrong type, which the repair replaces), and Postgres refuses the repair's record
        // of the basket (a trigger of this test's own database): it fails after writing Redis's
        // reservations, in two chunks.
        _ = try await fixture.redis.send(["DEL"] + ids.map { .string(Self.repairKey($0, of: basketId)) })
        _ = try await fixture.redis.send("SET", .string(Self.repairKey(ids[count - 1], of: basketId)), "not-a-hash")
        _ = try await fixture.postgres.execute(
            """
            CREATE FUNCTION refuse_repair() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused by the test'; END $$
            """, [])
        _ = try await fixture.postgres.execute(
            "CREATE TRIGGER refuse_repair BEFORE UPDATE ON baskets FOR EACH ROW EXECUTE FUNCTION refuse_repair()", [])

        let reconciler = fixture.reconciler()
        await #expect(throws: (any Error).self) { try await reconciler.repairBasket(basketId, reason: Self.drift(basketId)) }
        #expect(try await fixture.redis.send("EXISTS", .string(Self.repairKey(ids[0], of: basketId))).int == 1, "the first chunk ran")
        #expect(
            try await fixture.redis.send("HEXISTS", .string(Self.basketKey(basketId)), "maint").int == 1,
            "a half-written basket was put back on sale")
        #expect(try await fixture.gateway.reserve(basketId, consumer: "during").status == 503)

        #expect(try await fixture.redis.send("HGET", .string(Self.repairKey(ids[count - 1], of: basketId)), "status").string == "pending")

        // The cause removed, the same reconciler's retry takes its lease back and finishes.
        _ = try await fixture.postgres.execute("DROP TRIGGER refuse_repair ON baskets", [])
        // (the first try wrote every reservation back, and the counters had kept their units: under
        // the lease the basket is whole again, and it goes back on sale)
        #expect(try await reconciler.repairBasket(basketId, reason: Self.drift(basketId)) == .consistent)
        #expect(try await fixture.redis.send("HEXISTS", .string(Self.basketKey(basketId)), "maint").int == 0)
        var held = 0
        for id in ids where try await fixture.redis.send("EXISTS", .string(Self.repairKey(id, of: basketId))).int == 1 { held += 1 }
        #expect(held == count)
        let basket = try await fixture.gateway.basket(basketId)
        #expect(basket["stock"]?.int == 1_000 - count && basket["pending"]?.int == count)
        #expect(try await fixture.gateway.reserve(basketId, consumer: "after").status == 201)
        await fixture.stop()
    }

    @Test("the repair's Postgres step, landing after the consumer applied a newer event, keeps that event's counters")
    func postgresStepNeverOverwritesNewerEvents() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("late")
        try await fixture.gateway.createBasket(basketId, stock: 10)
        _ = try await RepairIsolationTests.reserve(fixture, basketId, ["l1"])
        try await fixture.once()
        _ = try await fixture.redis.send("HINCRBY", .string(Self.basketKey(basketId)), "stock", 3)
        let reconciler = fixture.reconciler()
        // The plan the repair makes (the basket does not change until the repair).
        let redisSide = try await reconciler.redisSnapshot(basketId, ids: nil)
        let postgresSide = try await reconciler.postgresSnapshot(
            basketId, redisIds: Array(redisSide.snapshot.reservations.keys), full: true)
        let plan = try RepairPlan.make(basketId: basketId, redis: redisSide.snapshot, postgres: postgresSide)
        #expect(try await reconciler.repairBasket(basketId, reason: Self.drift(basketId, .counters)) == .repaired(oversoldBy: 0))
        #expect(try await fixture.redis.send("HGET", .string(Self.basketKey(basketId)), "seq").string == String(plan.seq))
        // Back on sale: a reserve lands and the consumer applies it, then the step runs late.
        _ = try await RepairIsolationTests.reserve(fixture, basketId, ["l2"])
        _ = try await reconciler.drain()
        try await reconciler.recordRepair(plan, basketId: basketId)
        let row = try #require(try await fixture.postgresBasket(basketId))
        #expect(row.redisSeq == plan.seq + 1)
        #expect(row.stock == 8, "the repair's older stock \(plan.state.stock) overwrote the reserve's")
        #expect(try await reconciler.audit(repair: false).isEmpty)
        await fixture.stop()
    }

    @Test("Postgres restored from a backup after the stream was trimmed: audit reports it, once repairs it")
    func postgresLostEvents() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("restored")
        try await fixture.gateway.createBasket(basketId, stock: 10)
        _ = try await RepairIsolationTests.reserve(fixture, basketId, ["b1", "b2"])
        try await fixture.once()
        let lost = try await RepairIsolationTests.reserve(fixture, basketId, ["b3", "b4"])
        try await fixture.once()
        // The backup predates the last two reservations; their stream entries are acknowledged.
        _ = try await fixture.postgres.execute("DELETE FROM reservations WHERE id = ANY($1::text[])", [.textArray(lost)])
        _ = try await fixture.postgres.execute(
            "UPDATE baskets SET redis_seq = redis_seq - 2, stock = stock + 2, redis_entry = NULL WHERE id = $1", [.text(basketId)])
        let report = try await Self.audit(fixture)
        #expect(report.status == 1 && report.output.contains(basketId), "\(report.status) \(report.output)")
        try await RepairIsolationTests.once(fixture)
        let statuses = try await fixture.postgresReservations(basketId)
        #expect(lost.allSatisfy { statuses[$0] == "pending" }, "\(statuses)")
        #expect(try await fixture.postgresBasket(basketId)?.stock == 6)
        #expect(try await Self.audit(fixture).status == 0)
        await fixture.stop()
    }

    @Test("a Redis seq of Int.max is drift, judged at once even while its partition has entries waiting")
    func outOfRangeSeqIsNotLag() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("maxseq")
        var neighbour = TestEnvironment.uniqueId("neighbour")
        while Keyspace.partition(ofBasket: neighbour) != Keyspace.partition(ofBasket: basketId) {
            neighbour = TestEnvironment.uniqueId("neighbour")
        }
        for basket in [basketId, neighbour] { try await fixture.gateway.createBasket(basket, stock: 10) }
        try await fixture.once()
        _ = try await fixture.redis.send("HSET", .string(Self.basketKey(basketId)), "seq", "9223372036854775807")
        // An entry of another basket waits in the same stream (nobody drains it here).
        _ = try await RepairIsolationTests.reserve(fixture, neighbour, ["n1"])
        let report = try await Self.audit(fixture)
        #expect(report.status == 1 && report.output.contains(basketId), "\(report.status) \(report.output)")
        await fixture.stop()
    }

    @Test("an audit never sets the partition markers: a flush landing after its read is still rebuilt")
    func auditLeavesMarkers() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("markers")
        try await fixture.gateway.createBasket(basketId, stock: 10)
        _ = try await RepairIsolationTests.reserve(fixture, basketId, ["m1"])
        try await fixture.once()
        let partition = Keyspace.partition(ofBasket: basketId)
        #expect(try await fixture.redis.send("EXISTS", .string(Keyspace.partitionMarker(partition))).int == 1)
        // A FLUSHALL during the audit, after it read the basket: the markers go, then the data.
        _ = try await fixture.redis.send(["DEL"] + (0..<Keyspace.partitionCount).map { .string(Keyspace.partitionMarker($0)) })
        let reconciler = fixture.reconciler()
        _ = try await reconciler.audit(repair: true)
        _ = try await fixture.redis.send("DEL", .string(Self.basketKey(basketId)))
        #expect(try await reconciler.rebuildUnmarkedPartitions() == 1, "the audit's markers hid the lost basket")
        #expect(try await fixture.gateway.basket(basketId)["pending"]?.int == 1)
        #expect(try await fixture.redis.send("EXISTS", .string(Keyspace.partitionMarker(partition))).int == 1)
        await fixture.stop()
    }

    @Test("a lost basket whose Postgres row was deleted leaves the lost set: 404, not 503 forever")
    func lostBasketNobodyKnows() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("gone")
        let lostSet = Keyspace.lostBaskets(Keyspace.partition(ofBasket: basketId))
        // Marked lost by a rebuild, then its row deleted before the rebuild reached it.
        _ = try await fixture.redis.send("SADD", .string(lostSet), .string(basketId))
        #expect(try await fixture.gateway.request(.GET, "/v1/baskets/\(basketId)").status == 503)
        let reconciler = fixture.reconciler()
        #expect(try await reconciler.repairBasket(basketId, reason: Self.drift(basketId, .missingInRedis)) == .consistent)
        #expect(try await fixture.redis.send("SISMEMBER", .string(lostSet), .string(basketId)).int == 0)
        #expect(try await fixture.redis.send("EXISTS", .string(Self.basketKey(basketId))).int == 0)
        #expect(try await fixture.gateway.request(.GET, "/v1/baskets/\(basketId)").status == 404)
        await fixture.stop()
    }
}
