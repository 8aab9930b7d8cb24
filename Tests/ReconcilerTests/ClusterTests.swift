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
        let product = try await ClusterProduct.start()
        let (cluster, database, gateway) = (product.cluster, product.database, product.gateway)
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
        await product.stop()
    }

    /// Basket ids that all fall in `partition`.
    static func baskets(in partition: Int, count: Int, prefix: String) -> [String] {
        var found: [String] = []
        var index = 0
        while found.count < count {
            let id = "\(prefix)-\(index)"
            if Keyspace.partition(ofBasket: id) == partition { found.append(id) }
            index += 1
        }
        return found
    }

    @Test("the concurrency scenarios on a cluster: cancel against reserve, one consumer at its limit, webhooks and an Idempotency-Key sent at once")
    func concurrencyScenarios() async throws {
        let product = try await ClusterProduct.start()
        let (cluster, database, gateway) = (product.cluster, product.database, product.gateway)
        let prefix = TestEnvironment.uniqueId("sc")

        // Cancel against reserve on stock 1: the reserve wins only if the cancel came first.
        let single = "\(prefix)-single"
        try await gateway.createBasket(single, stock: 1)
        let first = try #require(try await gateway.reserve(single, consumer: "first").json?["reservationId"]?.stringValue)
        async let cancelled = gateway.request(.DELETE, "/v1/reservations/\(first)")
        async let second = gateway.reserve(single, consumer: "second")
        let (cancel, reserve) = try await (cancelled, second)
        #expect(cancel.status == 200)
        #expect(reserve.status == 201 || reserve.errorCode == "sold_out")
        let view = try await gateway.basket(single)
        #expect(view["stock"]?.int == (reserve.status == 201 ? 0 : 1) && view["pending"]?.int == (reserve.status == 201 ? 1 : 0))

        // One consumer, 10 concurrent reservations, maxPerConsumer 2: exactly 2.
        let limited = "\(prefix)-limited"
        try await gateway.createBasket(limited, stock: 10, maxPerConsumer: 2)
        let limitedGrants = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<10 { group.addTask { try await gateway.reserve(limited, consumer: "greedy").status == 201 ? 1 : 0 } }
            return try await group.reduce(0, +)
        }
        #expect(limitedGrants == 2)

        // One webhook delivered 10 times at once: processed once.
        let paid = try #require(try await gateway.reserve(limited, consumer: "payer").json?["reservationId"]?.stringValue)
        let eventId = TestEnvironment.uniqueId("evt")
        let statuses = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<10 {
                group.addTask { try await gateway.deliverPayment(eventId: eventId, reservationId: paid).json?["status"]?.stringValue ?? "?" }
            }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(statuses.filter { $0 == "processed" }.count == 1 && statuses.filter { $0 == "duplicate" }.count == 9)

        // One Idempotency-Key sent 10 times at once: one reservation, ten identical answers.
        let keyed = "\(prefix)-keyed"
        try await gateway.createBasket(keyed, stock: 5, maxPerConsumer: 5)
        let answers = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<10 {
                group.addTask {
                    try await gateway.reserve(keyed, consumer: "k", idempotencyKey: "same-key").json?["reservationId"]?.stringValue ?? ""
                }
            }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(answers.count == 1 && answers.first?.isEmpty == false)
        #expect(try await gateway.basket(keyed)["pending"]?.int == 1)

        // A waiting room on a cluster (its keys in the basket's slot): 8 consumers join at once,
        // one place each; admitted, each reserves with its admission, and nobody without one.
        let roomed = "\(prefix)-room"
        let put = try await gateway.request(
            .PUT, "/v1/baskets/\(roomed)", headers: gateway.admin,
            body: HTTPTestClient.json(["stock": 8, "waitingRoom": .raw(#"{"admitPerMinute":1000000}"#)]))
        #expect(put.status == 201, "\(put.text)")
        let tickets = try await withThrowingTaskGroup(of: (String, String).self) { group in
            for index in 0..<8 {
                group.addTask {
                    let joined = try await gateway.request(
                        .POST, "/v1/baskets/\(roomed)/queue", body: HTTPTestClient.json(["consumerId": .string("q\(index)")]))
                    return ("q\(index)", joined.json?["ticket"]?.stringValue ?? "")
                }
            }
            return try await group.reduce(into: [(String, String)]()) { $0.append($1) }
        }
        #expect(Set(tickets.map(\.1)).count == 8 && !tickets.contains { $0.1.isEmpty })
        // (the view's counts are the gateway's room snapshot, at most a second old)
        #expect(try await eventually { try await gateway.basket(roomed)["waitingRoom"]?["members"]?.int == 8 })
        let unadmitted = try await gateway.reserve(roomed, consumer: "q0")
        #expect(unadmitted.status == 403 && unadmitted.errorCode == "admission_required")
        for (consumer, ticket) in tickets {
            var view: TestHTTPResponse?
            let admitted = try await eventually {
                view = try await gateway.request(.GET, "/v1/baskets/\(roomed)/queue/\(ticket)")
                return view?.json?["state"]?.stringValue == "admitted"
            }
            #expect(admitted, "\(view?.text ?? "")")
            let admission = try #require(view?.json?["admissionToken"]?.stringValue)
            let reserved = try await gateway.request(
                .POST, "/v1/baskets/\(roomed)/reservations", headers: [("Admission-Token", admission)],
                body: HTTPTestClient.json(["consumerId": .string(consumer)]))
            #expect(reserved.status == 201, "\(reserved.text)")
        }
        #expect(try await gateway.basket(roomed)["stock"]?.int == 0)

        let environment = ["REDIS_URL": cluster.url, "DATABASE_URL": database.url]
        let once = try await ProductProcess.run("reconciler", ["once"], environment: environment)
        #expect(once.status == 0, "\(once.output)")
        let postgres = PostgresClient(url: database.url, size: 1)
        for basket in [single, limited, keyed, roomed] {
            let redisView = try await gateway.basket(basket)
            let row = try await postgres.query(
                "SELECT stock, pending_units, confirmed_units FROM baskets WHERE id = $1", [.text(basket)])
            #expect(row.first?["stock"].int == redisView["stock"]?.int)
            #expect(row.first?["pending_units"].int == redisView["pending"]?.int)
            #expect(row.first?["confirmed_units"].int == redisView["confirmed"]?.int)
        }
        let audit = try await ProductProcess.run("reconciler", ["audit"], environment: environment)
        #expect(audit.status == 0, "\(audit.output)")
        await postgres.shutdown()
        await product.stop()
    }

    @Test("resharding under load: 16 clients on one partition while its slot migrates (ASK, then MOVED): only 201 or 503, nothing lost or sold twice")
    func reshardingUnderLoad() async throws {
        let product = try await ClusterProduct.start()
        let (cluster, database, gateway) = (product.cluster, product.database, product.gateway)
        let baskets = Self.baskets(in: 0, count: 4, prefix: TestEnvironment.uniqueId("rs"))
        for basket in baskets { try await gateway.createBasket(basket, stock: 100_000) }
        let tally = LoadTally()
        let load = tally.load(clients: 16) { client, attempt in
            try await gateway.reserve(baskets[(client + attempt) % baskets.count], consumer: "r\(client)-\(attempt)")
        }
        func answered(_ count: Int) async throws {
            func total() -> Int { tally.granted.withLock { $0.count } + tally.others.withLock { $0.count } }
            let before = total()
            #expect(try await eventually { total() >= before + count })
        }
        // A client of its own that knows the map from before the move and sends nothing during
        // it: it must meet ASK while the slot migrates, then MOVED once it has moved.
        var probeConfiguration = try RedisConfiguration(url: cluster.url)
        probeConfiguration.connectTimeout = .seconds(30)
        let probe = RedisClient(configuration: probeConfiguration, eventLoopGroup: TestEnvironment.eventLoopGroup)
        let basketKey = Keyspace.basket(baskets[0], partition: 0)
        #expect(try await probe.send("HGET", .string(basketKey), "capacity").int == 100_000)
        let probeBefore = probe.clusterRedirects
        try await tally.progress(100)
        _ = try await cluster.migrate(
            slot: RedisHashSlot.slot(of: Keyspace.prefix(0)),
            // While the slot's keys are split between two nodes, a reservation (which touches
            // several of them) gets TRYAGAIN, then 503: traffic must keep being answered.
            pause: { try await answered(16) },
            beforeAssign: { () async throws in
                #expect(try await probe.send("HGET", .string(basketKey), "capacity").int == 100_000)
                #expect(probe.clusterRedirects.asked == probeBefore.asked + 1, "\(probe.clusterRedirects)")
            })
        #expect(try await probe.send("HGET", .string(basketKey), "capacity").int == 100_000)
        #expect(probe.clusterRedirects.moved == probeBefore.moved + 1, "\(probe.clusterRedirects)")
        await probe.shutdown()
        try await tally.progress(100)
        tally.stop.store(true, ordering: .relaxed)
        await load.value
        let redirects = gateway.redis.clusterRedirects
        print("resharding: redirects followed \(redirects); statuses other than 201: \(Set(tally.others.withLock { $0 }))")
        #expect(tally.others.withLock { $0 }.allSatisfy { $0 == 503 }, "only 503 besides 201")

        let granted = tally.granted.withLock { $0 }
        var missing = 0
        for id in granted where try await gateway.request(.GET, "/v1/reservations/\(id)").json?["status"]?.stringValue != "pending" {
            missing += 1
        }
        #expect(missing == 0, "\(missing) of \(granted.count) reservations answered 201 are missing")
        var held = 0
        for basket in baskets {
            let view = try await gateway.basket(basket)
            #expect((view["stock"]?.int ?? -1) + (view["pending"]?.int ?? -1) == 100_000, "\(basket): \(view)")
            held += view["pending"]?.int ?? 0
        }
        #expect(held >= granted.count)
        let environment = ["REDIS_URL": cluster.url, "DATABASE_URL": database.url]
        let once = try await ProductProcess.run("reconciler", ["once"], environment: environment)
        #expect(once.status == 0, "\(once.output)")
        let postgres = PostgresClient(url: database.url, size: 1)
        let rows = try await postgres.query("SELECT count(*) AS n, count(DISTINCT id) AS d FROM reservations")
        #expect(rows[0]["n"].int == held && rows[0]["d"].int == held)
        #expect(try await ProductProcess.run("reconciler", ["audit"], environment: environment).status == 0)
        await postgres.shutdown()
        await product.stop()
    }

    @Test("failover under load: the gateway and a running reconciler follow the promoted replica without a restart; nothing lost, no oversell")
    func failoverUnderLoad() async throws {
        let product = try await ClusterProduct.start()
        let (cluster, database, gateway) = (product.cluster, product.database, product.gateway)
        let baskets = Self.basketsOnEveryPartition(TestEnvironment.uniqueId("fo"))
        for basket in baskets { try await gateway.createBasket(basket, stock: 100_000) }
        let environment = [
            "REDIS_URL": cluster.url, "DATABASE_URL": database.url, "RECONCILER_METRICS_PORT": "0", "AUDIT_INTERVAL_SECONDS": "2",
        ]
        let migrate = try await ProductProcess.run("reconciler", ["migrate"], environment: environment)
        #expect(migrate.status == 0, "\(migrate.output)")
        let reconciler = try ProductProcess.start("reconciler", ["run"], environment: environment)
        let tally = LoadTally()
        let load = tally.load(clients: 8) { client, attempt in
            try await gateway.reserve(baskets[(client + attempt) % baskets.count], consumer: "f\(client)-\(attempt)")
        }
        try await tally.progress(100)
        let owner = try #require(try await cluster.owner(ofSlot: RedisHashSlot.slot(of: Keyspace.prefix(3))))
        _ = try await cluster.failover(primaryPort: owner.port)
        try await tally.progress(200)
        tally.stop.store(true, ordering: .relaxed)
        await load.value

        let granted = tally.granted.withLock { $0 }
        var missing = 0
        for id in granted where try await gateway.request(.GET, "/v1/reservations/\(id)").json?["status"]?.stringValue != "pending" {
            missing += 1
        }
        #expect(missing == 0, "\(missing) of \(granted.count) reservations answered 201 are missing after the failover")
        var held = 0
        for basket in baskets {
            let view = try await gateway.basket(basket)
            #expect((view["stock"]?.int ?? -1) + (view["pending"]?.int ?? -1) == 100_000, "\(basket): \(view)")
            held += view["pending"]?.int ?? 0
        }
        // The same reconciler process, never restarted, brings Postgres to exactly Redis.
        let postgres = PostgresClient(url: database.url, size: 1)
        #expect(
            try await eventually(interval: .milliseconds(200)) {
                try await postgres.query("SELECT count(*) AS n FROM reservations")[0]["n"].int == held
            })
        reconciler.signal(SIGTERM)
        let stopped = try await reconciler.finish(timeout: .seconds(120))
        #expect(stopped.status == 0)
        #expect(!stopped.output.contains("did not stop within its shutdown grace"), "a clean stop is not reported as a forced one")
        #expect(try await ProductProcess.run("reconciler", ["audit"], environment: environment).status == 0)
        await postgres.shutdown()
        await product.stop()
    }

    @Test("a primary killed with SIGKILL: its slots answer 503 (never 500, never a hang) until its replica takes over, then succeed")
    func primaryKilled() async throws {
        let cluster = try RedisClusterProcess()
        try await cluster.start()
        let gateway = try await GatewayHarness.start(redisURL: cluster.url)
        let basket = Self.baskets(in: 5, count: 1, prefix: TestEnvironment.uniqueId("kill"))[0]
        try await gateway.createBasket(basket, stock: 100_000)
        #expect(try await gateway.reserve(basket, consumer: "before").status == 201)
        let owner = try #require(try await cluster.owner(ofSlot: RedisHashSlot.slot(of: Keyspace.prefix(5))))
        // Replication is asynchronous: a primary killed right after a write may take it along
        // (the promoted replica then has no basket: 404). That loss is Redis's, documented in
        // the README; here the replica is caught up first, so what is tested is the failover.
        #expect(try await cluster.waitReplicated(primaryPort: owner.port), "the replica has the basket before its primary dies")
        cluster.kill(port: owner.port)
        var statuses: [Int] = []
        var attempt = 0
        let clock = ContinuousClock()
        var slowest = Duration.zero
        // Until the replica serves the slot: every answer is 201 or 503, each in bounded time.
        #expect(
            try await eventually(timeout: .seconds(120), interval: .milliseconds(100)) {
                attempt += 1
                let started = clock.now
                let response = try await gateway.reserve(basket, consumer: "during-\(attempt)")
                slowest = max(slowest, clock.now - started)
                statuses.append(response.status)
                return response.status == 201
            })
        print("primary killed: statuses \(Set(statuses)), \(statuses.count) attempts, slowest answer \(slowest)")
        #expect(statuses.allSatisfy { $0 == 201 || $0 == 503 })
        #expect(slowest < .seconds(30), "no request hangs")
        try await cluster.waitHealthy()
        for index in 0..<5 { #expect(try await gateway.reserve(basket, consumer: "after-\(index)").status == 201) }
        await gateway.stop()
        cluster.stop()
    }
}

/// What most cluster tests start: a Redis Cluster of their own, a database of their own and a
/// gateway on the cluster; `stop` takes them down in reverse order.
struct ClusterProduct {
    let cluster: RedisClusterProcess
    let database: TestDatabase
    let gateway: GatewayHarness

    static func start() async throws -> ClusterProduct {
        let cluster = try RedisClusterProcess()
        try await cluster.start()
        let database = try await TestDatabase.create()
        let gateway = try await GatewayHarness.start(redisURL: cluster.url)
        return ClusterProduct(cluster: cluster, database: database, gateway: gateway)
    }

    func stop() async {
        await gateway.stop()
        await database.drop()
        cluster.stop()
    }
}
