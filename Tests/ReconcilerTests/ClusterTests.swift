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

/// The product on a real Redis Cluster of its own (3 primaries, 3 replicas): the gateway routes
/// by slot, the reconciler reads every stream on its node, and both follow slot moves and
/// failovers.
@Suite("Redis Cluster", .serialized)
struct ClusterTests {
    /// One basket id per partition, so every primary (and every stream) is used.
    static func basketsOnEveryPartition(_ prefix: String) -> [String] {
        var byPartition: [Int: String] = [:]
        var index = 0
        while byPartition.count < Keyspace.partitionCount {
            let id = "\(prefix)-\(index)"
            byPartition[Keyspace.partition(ofBasket: id)] = byPartition[Keyspace.partition(ofBasket: id)] ?? id
            index += 1
        }
        return (0..<Keyspace.partitionCount).compactMap { byPartition[$0] }
    }

    @Test("gateway and reconciler on a cluster: exactly the stock sells on every partition, and Postgres agrees")
    func reserveAndReconcile() async throws {
        let cluster = try RedisClusterProcess()
        try await cluster.start()
        let database = try await TestDatabase.create()
        let gateway = try await GatewayHarness.start(redisURL: cluster.url)
        let baskets = Self.basketsOnEveryPartition(TestEnvironment.uniqueId("cl"))
        for basket in baskets { try await gateway.createBasket(basket, stock: 3) }
        let granted = try await withThrowingTaskGroup(of: (String, Int).self) { group in
            for basket in baskets {
                for consumer in 0..<8 {
                    group.addTask {
                        (basket, try await gateway.reserve(basket, consumer: "c\(consumer)").status == 201 ? 1 : 0)
                    }
                }
            }
            return try await group.reduce(into: [String: Int]()) { $0[$1.0, default: 0] += $1.1 }
        }
        #expect(baskets.allSatisfy { granted[$0] == 3 }, "\(granted)")

        let environment = ["REDIS_URL": cluster.url, "DATABASE_URL": database.url]
        let once = try await ProductProcess.run("reconciler", ["once"], environment: environment)
        #expect(once.status == 0, "\(once.output)")
        let postgres = PostgresClient(url: database.url, size: 1)
        let rows = try await postgres.query("SELECT count(*) AS n, COALESCE(sum(stock), -1) AS stock FROM baskets")
        #expect(rows[0]["n"].int == baskets.count && rows[0]["stock"].int == 0)
        let reservations = try await postgres.query("SELECT count(*) AS n FROM reservations")
        #expect(reservations[0]["n"].int == baskets.count * 3)
        let audit = try await ProductProcess.run("reconciler", ["audit"], environment: environment)
        #expect(audit.status == 0, "\(audit.output)")
        await postgres.shutdown()
        await gateway.stop()
        await database.drop()
        cluster.stop()
    }

    @Test("a slot moved while clients reserve (ASK, then MOVED) and a primary failed over: no 201 lost, nothing sold twice")
    func slotMoveAndFailover() async throws {
        let cluster = try RedisClusterProcess()
        try await cluster.start()
        let database = try await TestDatabase.create()
        let gateway = try await GatewayHarness.start(redisURL: cluster.url)
        let baskets = Self.basketsOnEveryPartition(TestEnvironment.uniqueId("mv"))
        for basket in baskets { try await gateway.createBasket(basket, stock: 100_000) }
        let tally = LoadTally()
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for client in 0..<8 {
                    group.addTask {
                        var attempt = 0
                        while !tally.stop.load(ordering: .relaxed) {
                            attempt += 1
                            // Half the traffic on partition 0, whose slot the test moves.
                            let basket = attempt % 2 == 0 ? baskets[0] : baskets[(client + attempt) % baskets.count]
                            if let response = try? await gateway.reserve(basket, consumer: "m\(client)-\(attempt)"), response.status == 201,
                                let id = response.json?["reservationId"]?.stringValue
                            {
                                tally.granted.withLock { $0.append(id) }
                            }
                        }
                    }
                }
            }
        }
        func progress(_ count: Int) async throws {
            let before = tally.granted.withLock { $0.count }
            #expect(try await eventually { tally.granted.withLock { $0.count } >= before + count })
        }
        try await progress(100)
        // Move the slot of partition 0's keys to another primary, with traffic between batches.
        let slot = RedisHashSlot.slot(of: Keyspace.prefix(0))
        _ = try await cluster.migrate(slot: slot) { try await progress(5) }
        try await progress(100)
        #expect(gateway.redis.clusterRedirects.moved >= 1, "the gateway followed the slot to its new node")
        // Fail over the primary that now serves partition 1.
        let owner = try #require(try await cluster.owner(ofSlot: RedisHashSlot.slot(of: Keyspace.prefix(1))))
        _ = try await cluster.failover(primaryPort: owner.port)
        try await progress(100)
        tally.stop.store(true, ordering: .relaxed)
        await load.value
        print("cluster redirects followed by the gateway: \(gateway.redis.clusterRedirects)")

        let granted = tally.granted.withLock { $0 }
        var missing = 0
        for id in granted where try await gateway.request(.GET, "/v1/reservations/\(id)").json?["status"]?.stringValue != "pending" {
            missing += 1
        }
        #expect(missing == 0, "\(missing) of \(granted.count) reservations answered 201 are missing")
        // Books balanced on every basket; Postgres gets exactly what Redis holds.
        var held = 0
        for basket in baskets {
            let view = try await gateway.basket(basket)
            let (stock, pending, capacity) = (view["stock"]?.int ?? -1, view["pending"]?.int ?? -1, view["capacity"]?.int ?? -1)
            #expect(stock + pending == capacity && capacity == 100_000, "\(basket): \(view)")
            held += pending
        }
        #expect(held >= granted.count)
        let environment = ["REDIS_URL": cluster.url, "DATABASE_URL": database.url]
        let once = try await ProductProcess.run("reconciler", ["once"], environment: environment)
        #expect(once.status == 0, "\(once.output)")
        let postgres = PostgresClient(url: database.url, size: 1)
        let rows = try await postgres.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM reservations")
        #expect(rows[0]["n"].int == held && rows[0]["d"].int == held)
        let audit = try await ProductProcess.run("reconciler", ["audit"], environment: environment)
        #expect(audit.status == 0, "\(audit.output)")
        await postgres.shutdown()
        await gateway.stop()
        await database.drop()
        cluster.stop()
    }
}
