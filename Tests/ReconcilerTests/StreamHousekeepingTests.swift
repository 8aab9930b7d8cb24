import Foundation
import Logging
import PostgresClient
import ReconcilerCore
import RedisClient
import ReservationCore
import TestSupport
import Testing

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
}
