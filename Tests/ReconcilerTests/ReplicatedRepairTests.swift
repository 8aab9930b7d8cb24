import Foundation
import GatewayCore
import NIOHTTP1
import PostgresClient
import RedisClient
import ReservationCore
import TestSupport
import Testing

/// REDIS_WAIT_REPLICAS for the reconciler: a repair's writes count as done only once the Redis
/// primary's replica holds them. With the replica frozen, `reconciler once` cannot finish the
/// repair (it fails and is counted, the rest goes on); once the replica is back, the next one does.
@Suite("Reconciler repairs with REDIS_WAIT_REPLICAS", .serialized)
struct ReplicatedRepairTests {
    @Test("a repair with WAIT 1 and the replica frozen does not complete; with the replica back it does, and the audit is clean")
    func repairWaitsForReplica() async throws {
        let primary = try RedisServerProcess()
        try await primary.start()
        let replica = try RedisServerProcess(appendOnly: false)
        try await replica.start()
        _ = replica.command("REPLICAOF 127.0.0.1 \(primary.port)")
        #expect(
            try await eventually {
                replica.command("INFO replication").contains("master_link_status:up")
                    && primary.command("INFO replication").contains("connected_slaves:1")
            })
        let database = try await TestDatabase.create()
        let gateway = try await GatewayHarness.start(redisURL: primary.url, expiryLoop: false)
        let environment = [
            "REDIS_URL": primary.url, "DATABASE_URL": database.url, "REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "200",
            "REPAIR_LEASE_MS": "1000",
        ]
        let basket = TestEnvironment.uniqueId("wrep")
        try await gateway.createBasket(basket, stock: 10)
        for consumer in 0..<3 { #expect(try await gateway.reserve(basket, consumer: "c\(consumer)").status == 201) }
        let first = try await ProductProcess.run("reconciler", ["once"], environment: environment)
        #expect(first.status == 0, "\(first.output)")
        #expect(try await ProductProcess.run("reconciler", ["audit"], environment: environment).status == 0)

        // A corrupted counter, then the replica frozen: the repair's writes are not confirmed.
        let basketKey = Keyspace.basket(basket, partition: Keyspace.partition(ofBasket: basket))
        _ = try await gateway.redis.send(["HSET", .string(basketKey), "stock", 999])
        try replica.pause()
        let frozen: (status: Int32, output: String)
        do {
            frozen = try await ProductProcess.run("reconciler", ["once"], environment: environment)
        } catch {
            try? replica.resume()
            throw error
        }
        try replica.resume()
        #expect(frozen.status == 0, "a failing repair stops nothing else: \(frozen.output)")
        // Not done: the counter is still wrong, and the basket is still out of service (the repair
        // failed after its first write, so it is never put back on sale half-written).
        let state = try await gateway.redis.send(["HMGET", .string(basketKey), "stock", "maint"]).array ?? []
        #expect(state.first?.string == "999" && state.last?.isNull == false, "\(state)")

        // Replica back: a later run repairs it (its lease from the failed attempt runs out first).
        #expect(
            try await eventually(interval: .milliseconds(500)) {
                _ = try await ProductProcess.run("reconciler", ["once"], environment: environment)
                let after = try await gateway.redis.send(["HMGET", .string(basketKey), "stock", "maint"]).array ?? []
                return after.first?.string == "7" && after.last?.isNull == true
            })
        #expect(try await ProductProcess.run("reconciler", ["audit"], environment: environment).status == 0)
        let view = try await gateway.basket(basket)
        #expect(view["stock"]?.int == 7 && view["pending"]?.int == 3, "\(view)")
        // The replica holds the repaired counter.
        #expect(try await eventually { replica.command("HGET \(basketKey) stock").contains("7") })
        await gateway.stop()
        await database.drop()
        replica.kill()
        primary.kill()
    }
}
