import Foundation
import Logging
import NIOHTTP1
import PostgresClient
import RedisClient
import ReservationCore
import Synchronization
import TestSupport
import Testing

@testable import ReconcilerCore

@Suite("Reconciler housekeeping")
struct StreamHousekeepingTests {
    @Test("migrations are safe twice and from several processes at once")
    func concurrentMigrations() async throws {
        let database = try await TestDatabase.create()
        let clients = (0..<4).map { _ in PostgresClient(url: database.url, size: 1) }
        let applied = try await withThrowingTaskGroup(of: [String].self) { group in
            for client in clients { group.addTask { try await Migrator.migrate(client, logger: Logger(label: "test")) } }
            return try await group.reduce(into: [[String]]()) { $0.append($1) }
        }
        #expect(applied.filter { !$0.isEmpty }.count == 1, "exactly one migrator applied the schema")
        #expect(try await Migrator.migrate(clients[0], logger: Logger(label: "test")).isEmpty)
        let tables = try await clients[0].query(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_name IN ('baskets', 'reservations', 'payments')")
        #expect(tables[0]["n"].int == 3)
        for client in clients { await client.shutdown() }
        await database.drop()
    }

    @Test("trimming never removes an entry nobody has acknowledged")
    func trimKeepsPending() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("trim")
        try await fixture.gateway.createBasket(basketId, stock: 100, maxPerConsumer: 100)
        for index in 0..<10 { _ = try await fixture.gateway.reserve(basketId, consumer: "c\(index)") }
        let stream = Keyspace.stream(Keyspace.partition(ofBasket: basketId))
        let dead = fixture.reconciler("dead")
        try await dead.consumer.ensureGroups()
        // A consumer reads 5 entries and dies without acknowledging them.
        let unacknowledged = try await dead.consumer.readNew(count: 5, streams: [stream])
        #expect(unacknowledged.count == 5)
        let live = fixture.reconciler("live")
        let delivered = try await live.consumer.readNew(count: 100, streams: [stream])
        try await fixture.postgres.withConnection { try EventApplier.apply(delivered, on: $0) }
        try await live.consumer.acknowledge(delivered)
        try await live.consumer.trim()
        let remaining = try await fixture.redis.send("XRANGE", .string(stream), "-", "+").array ?? []
        let ids = Set(remaining.compactMap { $0.array?.first?.string })
        #expect(unacknowledged.allSatisfy { ids.contains($0.id) }, "pending entries survive the trim")
        // Once someone applies and acknowledges them, they can go.
        _ = try await live.drain()
        try await live.consumer.trim()
        #expect(try await fixture.redis.send("XLEN", .string(stream)).int ?? 99 <= 1)
        #expect(try await fixture.postgresReservations(basketId).count == 10)
        await fixture.stop()
    }

    @Test("an event Postgres refuses is set aside in dead_letters, acknowledged, and the events around it reach Postgres")
    func poisonEvents() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("poison-ok")
        try await fixture.gateway.createBasket(basketId, stock: 100, maxPerConsumer: 100)
        for index in 0..<3 { #expect(try await fixture.gateway.reserve(basketId, consumer: "before-\(index)").status == 201) }
        let stream = Keyspace.stream(Keyspace.partition(ofBasket: basketId))
        // Two events no retry can apply: a CHECK violation and a number past the column's range.
        let negative = try await fixture.redis.send(
            "XADD", .string(stream), "*", "type", "stock_adjusted", "basket", .string(TestEnvironment.uniqueId("poison")), "seq", "1",
            "stock", "-5", "capacity", "10")
        let huge = try await fixture.redis.send(
            "XADD", .string(stream), "*", "type", "stock_adjusted", "basket", .string(TestEnvironment.uniqueId("poison")), "seq", "1",
            "stock", "3000000000", "capacity", "3000000000")
        for index in 0..<3 { #expect(try await fixture.gateway.reserve(basketId, consumer: "after-\(index)").status == 201) }

        try await fixture.once()
        #expect(try await fixture.postgresReservations(basketId).count == 6)
        let letters = try await fixture.postgres.query(
            "SELECT entry_id, sqlstate, fields->>'stock' AS stock FROM dead_letters WHERE stream = $1 ORDER BY entry_id", [.text(stream)])
        #expect(letters.map { $0["entry_id"].string } == [negative.string, huge.string])
        #expect(letters.map { $0["sqlstate"].string } == ["23514", "22003"])
        #expect(letters.map { $0["stock"].string } == ["-5", "3000000000"])
        let pending = try await fixture.redis.send("XPENDING", .string(stream), .string(StreamConsumer.group))
        #expect(pending.array?.first?.int == 0, "every entry acknowledged, the refused ones included")
        // The stream keeps flowing: a later reservation still arrives.
        #expect(try await fixture.gateway.reserve(basketId, consumer: "later").status == 201)
        try await fixture.once()
        #expect(try await fixture.postgresReservations(basketId).count == 7)
        await fixture.stop()
    }

    @Test("under sustained load with the reconciler far behind, trims and audits still run on their clock and the stream shrinks")
    func housekeepingWhileBehind() async throws {
        let fixture = try await ReconcilerFixture.start()
        let stream = Keyspace.stream(0)
        // A backlog of events that change nothing, so each costs only its round trips; one per
        // batch keeps the reconciler behind for many trim and audit periods, however fast the
        // machine is (it cannot skip ahead).
        let backlog = 30_000
        for start in stride(from: 0, to: backlog, by: 1000) {
            _ = try await fixture.redis.pipeline(
                (start..<start + 1000).map { index in ["XADD", .string(stream), "*", "type", "noop", "n", .int(index)] })
        }
        let lastId = try #require(try await fixture.redis.send("XREVRANGE", .string(stream), "+", "-", "COUNT", 1).array?.first?.array?.first?.string)
        var configuration = ReconcilerConfiguration()
        configuration.reconcilerBatchSize = 1
        configuration.auditIntervalSeconds = 1
        configuration.trimIntervalMilliseconds = 100
        var logger = Logger(label: "test-reconciler")
        logger.logLevel = .critical
        let reconciler = Reconciler(
            redis: fixture.redis, postgres: fixture.postgres, configuration: configuration, consumerName: "behind", logger: logger)
        let running = Task { await reconciler.run() }
        // And a sustained load through the gateway all along, on a basket of the same stream.
        var candidate = TestEnvironment.uniqueId("sustained")
        while Keyspace.partition(ofBasket: candidate) != 0 { candidate = TestEnvironment.uniqueId("sustained") }
        let basketId = candidate
        try await fixture.gateway.createBasket(basketId, stock: 1_000_000)
        let tally = LoadTally()
        let load = tally.load(clients: 4) { client, attempt in
            try await fixture.gateway.reserve(basketId, consumer: "s\(client)-\(attempt)")
        }

        func lastDelivered() async throws -> String? {
            let groups = try await fixture.redis.send("XINFO", "GROUPS", .string(stream)).array ?? []
            for group in groups {
                let fields = group.array ?? []
                for index in stride(from: 0, to: fields.count - 1, by: 2) where fields[index].string == "last-delivered-id" {
                    return fields[index + 1].string
                }
            }
            return nil
        }
        var sawItBehind = false
        var last = ""
        // Generous: the whole suite runs beside this (floods, 100,000-request tests, CPU hogs), and
        // the consumer, one entry per transaction, must acknowledge a hundred before it is seen
        // trimming; the backlog keeps it behind for far longer than that.
        #expect(
            try await eventually(timeout: .seconds(900), interval: .milliseconds(50)) {
                let done = reconciler.housekeeping
                let info = try await fixture.redis.send("XINFO", "STREAM", .string(stream)).array ?? []
                var fields: [String: Int] = [:]
                for index in stride(from: 0, to: info.count - 1, by: 2) {
                    if let name = info[index].string, let value = info[index + 1].int { fields[name] = value }
                }
                let trimmed = (fields["entries-added"] ?? 0) - (fields["length"] ?? 0)
                let delivered = try await lastDelivered().flatMap(StreamID.init)
                // Read after the trim figures: if the backlog was not all delivered now, it was not then.
                let behind = delivered.map { $0 < StreamID(lastId)! } ?? true
                last = "behind \(behind), trimmed \(trimmed), trims \(done.trims), audits \(done.audits), audit failures \(done.auditFailures)"
                if behind && trimmed > 100 && done.trims >= 3 && done.audits >= 2 { sawItBehind = true }
                return sawItBehind || !behind
            })
        #expect(sawItBehind, "housekeeping waited for the reconciler to catch up: \(last)")
        tally.stop.store(true, ordering: .relaxed)
        await load.value
        running.cancel()
        _ = await running.value
        // Nothing the load was granted is lost on the way.
        try await fixture.once()
        let granted = tally.granted.withLock { $0 }
        let rows = try await fixture.postgresReservations(basketId)
        #expect(granted.allSatisfy { rows[$0] != nil })
        await fixture.stop()
    }

    @Test("a basket row's unit totals follow its reservations: inserts, status changes and deletes")
    func basketUnitTotals() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("units")
        try await fixture.gateway.createBasket(basketId, stock: 10, maxPerConsumer: 10)
        var ids: [String] = []
        for index in 0..<3 {
            ids.append(
                try #require(try await fixture.gateway.reserve(basketId, consumer: "u\(index)", quantity: 2).json?["reservationId"]?.stringValue))
        }
        try await fixture.once()
        func totals() async throws -> (Int?, Int?) {
            let row = try await fixture.postgres.query("SELECT pending_units, confirmed_units FROM baskets WHERE id = $1", [.text(basketId)])
            return (row.first?["pending_units"].int, row.first?["confirmed_units"].int)
        }
        #expect(try await totals() == (6, 0))
        _ = try await fixture.gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: ids[0])
        _ = try await fixture.gateway.request(.DELETE, "/v1/reservations/\(ids[1])")
        try await fixture.once()
        #expect(try await totals() == (2, 2))
        _ = try await fixture.postgres.execute("DELETE FROM reservations WHERE id = $1", [.text(ids[0])])
        #expect(try await totals() == (2, 0))
        await fixture.stop()
    }

    @Test("migrations split into statements at line-ending semicolons, never inside a $$ body")
    func migrationStatements() {
        let sql = """
            -- a comment
            CREATE TABLE a (x int);
            CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE a SET x = 1;
                RETURN NULL;
            END
            $$;
            CREATE INDEX i ON a (x);
            """
        let statements = Migrator.statements(sql)
        #expect(statements.count == 3)
        #expect(statements[1].contains("UPDATE a SET x = 1;") && statements[1].contains("END"))
    }
}
