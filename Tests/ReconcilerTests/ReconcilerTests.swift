import Foundation
import GatewayCore
import Logging
import NIOHTTP1
import PostgresClient
import ReconcilerCore
import RedisClient
import ReservationCore
import ReservationScripts
import Synchronization
import TestSupport
import Testing

@Suite("Reconciler against real Redis and Postgres")
struct ReconcilerTests {
    @Test("10 concurrent reservations on stock 3, then once: 3 rows in Postgres and stock 0")
    func tenOnThreeReachPostgres() async throws {
        let fixture = try await ReconcilerFixture.start()
        for _ in 0..<5 {
            let basketId = TestEnvironment.uniqueId("b")
            try await fixture.gateway.createBasket(basketId, stock: 3)
            let granted = try await withThrowingTaskGroup(of: Int.self) { group in
                for consumer in 0..<10 { group.addTask { try await fixture.gateway.reserve(basketId, consumer: "c\(consumer)").status } }
                return try await group.reduce(0) { $0 + ($1 == 201 ? 1 : 0) }
            }
            #expect(granted == 3)
            try await fixture.once()
            let rows = try await fixture.postgresReservations(basketId)
            #expect(rows.count == 3)
            #expect(rows.values.allSatisfy { $0 == "pending" })
            let basket = try #require(try await fixture.postgresBasket(basketId))
            #expect(basket.stock == 0)
            #expect(basket.capacity == 3)
        }
        await fixture.stop()
    }

    @Test("concurrent cancel and reserve, then once: Postgres stock >= 0 and equal to Redis")
    func cancelAndReserveReachPostgres() async throws {
        let fixture = try await ReconcilerFixture.start()
        for _ in 0..<10 {
            let basketId = TestEnvironment.uniqueId("b")
            try await fixture.gateway.createBasket(basketId, stock: 1)
            let held = try await fixture.gateway.reserve(basketId, consumer: "holder")
            let reservationId = try #require(held.json?["reservationId"]?.stringValue)
            async let cancel = fixture.gateway.request(.DELETE, "/v1/reservations/\(reservationId)")
            async let reserve = fixture.gateway.reserve(basketId, consumer: "newcomer")
            _ = try await (cancel, reserve)
            try await fixture.once()
            let postgresStock = try #require(try await fixture.postgresBasket(basketId)?.stock)
            #expect(postgresStock >= 0)
            #expect(postgresStock == (try await fixture.redisStock(basketId)))
            #expect(try await fixture.postgresReservations(basketId)[reservationId] == "cancelled")
        }
        await fixture.stop()
    }

    /// Two writers that both read a row before either writes: each waits in its change (called
    /// between its read and its UPDATE) until the other has read too.
    final class Rendezvous: Sendable {
        let arrived = Atomic<Int>(0)
        let calls = Atomic<Int>(0)
        /// The version each call of a change was given, in call order.
        let seen = Mutex<[Int]>([])

        /// Called from each writer's change; only the first call of each waits.
        func meet(parties: Int) {
            let call = calls.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue
            guard call <= parties else { return }
            arrived.wrappingAdd(1, ordering: .sequentiallyConsistent)
            // Bounded by a generous limit, never by a short window: a lone writer gives up after 60 s.
            let deadline = ContinuousClock.now.advanced(by: .seconds(60))
            while arrived.load(ordering: .sequentiallyConsistent) < parties && ContinuousClock.now < deadline { usleep(1000) }
        }
    }

    @Test("optimistic locking: two writers forced to read the same version both land (one retries); 50 concurrent adjustments all land")
    func optimisticLocking() async throws {
        let database = try await TestDatabase.create()
        let postgres = PostgresClient(url: database.url, size: 8)
        try await Migrator.migrate(postgres, logger: Logger(label: "test"))
        for round in 0..<20 {
            let basketId = "lock-\(round)"
            try await postgres.execute("INSERT INTO baskets (id, stock, capacity) VALUES ($1, 5, 5)", [.text(basketId)])
            let before = try #require(try await postgres.withConnection { try BasketStore.read($0, basketId) })
            let rendezvous = Rendezvous()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        _ = try await postgres.withConnection { connection in
                            try BasketStore.update(connection, basketId) { row in
                                rendezvous.seen.withLock { $0.append(row.version) }
                                rendezvous.meet(parties: 2)
                                var next = row
                                next.stock -= 1
                                return next
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            let after = try #require(try await postgres.withConnection { try BasketStore.read($0, basketId) })
            let versions = rendezvous.seen.withLock { $0 }
            // Both read the same version first, so one UPDATE found it changed and read again.
            #expect(versions.prefix(2) == [before.version, before.version], "\(versions)")
            #expect(versions.count == 3 && versions[2] == before.version + 1, "\(versions)")
            #expect(after.stock == 3)
            #expect(after.version == before.version + 2)
        }
        try await postgres.execute("INSERT INTO baskets (id, stock, capacity) VALUES ('lock-many', 100, 100)")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<50 {
                group.addTask { _ = try await BasketStore.adjustStock(postgres, basketId: "lock-many", by: index % 2 == 0 ? 3 : -1) }
            }
            try await group.waitForAll()
        }
        let many = try #require(try await postgres.withConnection { try BasketStore.read($0, "lock-many") })
        #expect(many.stock == 100 + 25 * 3 - 25)
        #expect(many.version == 51)
        await #expect(throws: BasketStoreError.insufficientStock("lock-many")) {
            try await BasketStore.adjustStock(postgres, basketId: "lock-many", by: -1000)
        }
        await postgres.shutdown()
        await database.drop()
    }

    @Test("two concurrent deliveries of one webhook, then once: exactly one payments row")
    func oneWebhookOneRow() async throws {
        let fixture = try await ReconcilerFixture.start()
        for _ in 0..<10 {
            let basketId = TestEnvironment.uniqueId("b")
            try await fixture.gateway.createBasket(basketId, stock: 1)
            let reservationId = try #require(try await fixture.gateway.reserve(basketId, consumer: "c").json?["reservationId"]?.stringValue)
            let eventId = TestEnvironment.uniqueId("evt")
            async let first = fixture.gateway.deliverPayment(eventId: eventId, reservationId: reservationId)
            async let second = fixture.gateway.deliverPayment(eventId: eventId, reservationId: reservationId)
            _ = try await (first, second)
            try await fixture.once()
            try await fixture.once()
            let rows = try await fixture.postgres.query("SELECT outcome, reservation_id FROM payments WHERE external_id = $1", [.text(eventId)])
            #expect(rows.count == 1)
            #expect(rows.first?["outcome"].string == "confirmed")
            #expect(try await fixture.postgresReservations(basketId)[reservationId] == "confirmed")
            let row = try await fixture.postgres.query("SELECT payment_id FROM reservations WHERE id = $1", [.text(reservationId)])
            #expect(row.first?["payment_id"].string == "pay-1")
        }
        await fixture.stop()
    }

    /// Writes `count` reservations straight through the reserve script, pipelined.
    static func reserveMany(_ fixture: ReconcilerFixture, basketId: String, count: Int) async throws {
        let partition = Keyspace.partition(ofBasket: basketId)
        let ids = ReservationIdGenerator()
        for start in stride(from: 0, to: count, by: 1000) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in start..<min(start + 1000, count) {
                    group.addTask {
                        let outcome = try await fixture.redis.run(
                            ReserveCall(
                                basketId: basketId, consumerId: "c\(index)", quantity: 1, reservationId: ids.next(partition: partition),
                                attemptsPerSecond: 0, idempotencyKey: nil))
                        guard case .granted = outcome else { throw HarnessError("reserve: \(outcome)") }
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test("a drain over many small batches, each read ahead and acknowledged behind: every event once, in order, nothing left pending")
    func drainReadsAheadInOrder() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("ahead")
        try await fixture.gateway.createBasket(basketId, stock: 200)
        var reservations: [String] = []
        for consumer in 0..<60 {
            let answer = try await fixture.gateway.reserve(basketId, consumer: "c\(consumer)")
            reservations.append(try #require(answer.json?["reservationId"]?.stringValue))
        }
        // A reservation and its cancellation usually land in different batches of 7: applied out
        // of order, the cancellation would be lost or the stock wrong.
        var cancelled: Set<String> = []
        for (index, id) in reservations.enumerated() where index % 3 == 0 {
            #expect(try await fixture.gateway.request(.DELETE, "/v1/reservations/\(id)").status == 200)
            cancelled.insert(id)
        }
        let stream = Keyspace.stream(Keyspace.partition(ofBasket: basketId))
        let events = try #require(try await fixture.redis.send("XLEN", .string(stream)).int)
        let applied = try await fixture.reconciler(batchSize: 7).drain()
        #expect(applied == events, "every event once")
        let rows = try await fixture.postgresReservations(basketId)
        #expect(rows.count == 60)
        for id in reservations { #expect(rows[id] == (cancelled.contains(id) ? "cancelled" : "pending"), "\(id)") }
        #expect(try await fixture.postgresBasket(basketId)?.stock == 200 - 60 + cancelled.count)
        #expect(try await fixture.postgresBasket(basketId)?.stock == (try await fixture.redisStock(basketId)))
        let pending = try await fixture.redis.send("XPENDING", .string(stream), .string(StreamConsumer.group))
        #expect(pending.array?.first?.int == 0, "everything read was acknowledged: \(pending)")
        await fixture.stop()
    }

    @Test("a reconciler killed with SIGKILL while draining 20,000 events, then started again: every reservation once")
    func killedMidDrain() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("big")
        try await fixture.gateway.createBasket(basketId, stock: 20_000)
        try await Self.reserveMany(fixture, basketId: basketId, count: 20_000)
        var environment = fixture.environment
        environment["RECONCILER_BATCH"] = "20"  // many small transactions
        // An uncommitted row holding the id of the 10,000th reservation in the stream: the
        // reconciler's insert of that id waits for this transaction, so the drain stops halfway
        // and the kill lands mid-drain however fast or slow the machine is.
        let stream = Keyspace.stream(Keyspace.partition(ofBasket: basketId))
        let firstHalf = try await fixture.redis.send("XRANGE", .string(stream), "-", "+", "COUNT", 10_000).array ?? []
        let blockedId = try #require(
            firstHalf.last?.array?.last?.array.flatMap { fields in
                stride(from: 0, to: fields.count - 1, by: 2).first { fields[$0].string == "res" }.flatMap { fields[$0 + 1].string }
            })
        let blocker = PostgresClient(url: fixture.database.url, size: 1)
        try await blocker.execute("BEGIN")
        try await blocker.execute(
            "INSERT INTO reservations (id, basket_id, consumer_id, quantity, status, expires_at) VALUES ($1, 'blocker', 'blocker', 1, 'pending', now())",
            [.text(blockedId)])
        let first = try ProductProcess.start("reconciler", ["once"], environment: environment)
        let midway = try await eventually(interval: .milliseconds(50)) {
            let count = try await fixture.postgres.query("SELECT count(*) AS n FROM reservations")[0]["n"].int ?? 0
            let waiting =
                try await fixture.postgres.query(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")[0]["n"].int ?? 0
            return count > 0 && waiting > 0
        }
        first.kill()
        #expect(midway, "the reconciler committed some batches and then waited on the blocking row")
        let partial = try await fixture.postgres.query("SELECT count(*) AS n FROM reservations")[0]["n"].int ?? 0
        #expect(partial > 0 && partial < 20_000, "killed mid-drain (\(partial) rows)")
        try await blocker.execute("ROLLBACK")
        await blocker.shutdown()
        let second = try await ProductProcess.run("reconciler", ["once"], environment: environment)
        #expect(second.status == 0)
        let summary = try await fixture.postgres.query(
            "SELECT count(*) AS n, count(DISTINCT id) AS d, count(*) FILTER (WHERE status = 'pending') AS p FROM reservations WHERE basket_id = $1",
            [.text(basketId)])
        #expect(summary[0]["n"].int == 20_000)
        #expect(summary[0]["d"].int == 20_000)
        #expect(summary[0]["p"].int == 20_000)
        #expect(try await fixture.postgresBasket(basketId)?.stock == 0)
        let audit = try await ProductProcess.run("reconciler", ["audit"], environment: fixture.environment)
        #expect(audit.status == 0, "\(audit.output)")
        await fixture.stop()
    }

    @Test("two reconcilers draining the same streams at once: nothing doubled, nothing lost")
    func twoReconcilers() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("b")
        // Holds of a day: on a loaded machine this test can outlast the default 10 minutes, and
        // holds expiring mid-test would change the counts it checks.
        try await fixture.gateway.createBasket(basketId, stock: 5_000, holdSeconds: 86_400)
        try await Self.reserveMany(fixture, basketId: basketId, count: 5_000)
        // Cancel a fifth of them so statuses move, and pay for some.
        let ids = Array(try await fixture.redis.send("ZRANGE", .string(Keyspace.holds(Keyspace.partition(ofBasket: basketId))), 0, -1).array ?? [])
            .compactMap(\.string)
        for id in ids.prefix(1000) { _ = try await fixture.gateway.request(.DELETE, "/v1/reservations/\(id)") }
        for (index, id) in ids.dropFirst(1000).prefix(200).enumerated() {
            _ = try await fixture.gateway.deliverPayment(eventId: "two-\(basketId)-\(index)", reservationId: id)
        }
        let a = fixture.reconciler("a")
        let b = fixture.reconciler("b")
        async let drainedA = a.drain()
        async let drainedB = b.drain()
        let (countA, countB) = try await (drainedA, drainedB)
        #expect(countA + countB >= 5_000 + 1 + 1_000 + 200)
        let summary = try await fixture.postgres.query(
            """
            SELECT count(*) AS n, count(*) FILTER (WHERE status = 'cancelled') AS c,
                   count(*) FILTER (WHERE status = 'confirmed') AS k, count(*) FILTER (WHERE status = 'pending') AS p
            FROM reservations WHERE basket_id = $1
            """, [.text(basketId)])
        #expect(summary[0]["n"].int == 5_000)
        #expect(summary[0]["c"].int == 1_000)
        #expect(summary[0]["k"].int == 200)
        #expect(summary[0]["p"].int == 3_800)
        #expect(try await fixture.postgres.query("SELECT count(*) AS n FROM payments")[0]["n"].int == 200)
        let basket = try #require(try await fixture.postgresBasket(basketId))
        #expect(basket.stock == 1_000)
        #expect(basket.stock == (try await fixture.redisStock(basketId)))
        #expect(try await a.audit(repair: false).isEmpty)
        await fixture.stop()
    }
}
