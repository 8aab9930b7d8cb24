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

@Suite("Reconciler drift repair and outages")
struct DriftAndOutageTests {
    /// Reserves for `attempts` new consumers and returns how many were granted.
    static func grants(_ fixture: ReconcilerFixture, _ basketId: String, attempts: Int) async throws -> Int {
        try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<attempts {
                group.addTask {
                    let response = try await fixture.gateway.reserve(basketId, consumer: "late-\(index)-\(UUID().uuidString.prefix(6))")
                    return response.status == 201 ? 1 : 0
                }
            }
            return try await group.reduce(0, +)
        }
    }

    static func audit(_ fixture: ReconcilerFixture) async throws -> (status: Int32, output: String) {
        try await ProductProcess.run("reconciler", ["audit"], environment: fixture.environment)
    }

    static func once(_ fixture: ReconcilerFixture) async throws {
        let result = try await ProductProcess.run("reconciler", ["once"], environment: fixture.environment)
        #expect(result.status == 0, "\(result.output)")
    }

    /// A basket with 3 of 10 units held, one paid, one cancelled, all in Postgres.
    /// The audit reports the basket (its line naming `kind`), `reconciler once` repairs it, and
    /// the next audit finds nothing.
    static func auditFindsAndOnceRepairs(_ fixture: ReconcilerFixture, _ basketId: String, kind: String?) async throws {
        let report = try await audit(fixture)
        #expect(report.status == 1)
        #expect(report.output.contains(basketId) && (kind.map { report.output.contains($0) } ?? true), "\(report.output)")
        try await once(fixture)
        #expect(try await audit(fixture).status == 0)
    }

    static func prepared(_ fixture: ReconcilerFixture) async throws -> (String, [String]) {
        let basketId = TestEnvironment.uniqueId("drift")
        try await fixture.gateway.createBasket(basketId, stock: 10)
        var ids: [String] = []
        for consumer in 0..<4 {
            let response = try await fixture.gateway.reserve(basketId, consumer: "c\(consumer)")
            ids.append(try #require(response.json?["reservationId"]?.stringValue))
        }
        _ = try await fixture.gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: ids[0])
        _ = try await fixture.gateway.request(.DELETE, "/v1/reservations/\(ids[3])")
        try await once(fixture)
        #expect(try await audit(fixture).status == 0)
        return (basketId, ids)
    }

    @Test("an overwritten stock counter is reported, repaired, and the right stock sells")
    func overwrittenCounter() async throws {
        let fixture = try await ReconcilerFixture.start()
        let (basketId, _) = try await Self.prepared(fixture)
        _ = try await fixture.redis.send("HSET", .string(Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId))), "stock", 999)
        try await Self.auditFindsAndOnceRepairs(fixture, basketId, kind: "counters")
        #expect(try await fixture.postgresBasket(basketId)?.stock == 7)
        #expect(try await Self.grants(fixture, basketId, attempts: 12) == 7)
        await fixture.stop()
    }

    @Test(
        "a negative or unreadable consumer count (a way around maxPerConsumer, or a 500) is refused, marked, found by the audit and repaired",
        arguments: ["-3", "abc", "9223372036854775807", "(the hash replaced by a string)"])
    func corruptConsumerCount(count: String) async throws {
        let fixture = try await ReconcilerFixture.start()
        let (basketId, _) = try await Self.prepared(fixture)
        let units = Keyspace.consumerUnits(basketId: basketId, partition: Keyspace.partition(ofBasket: basketId))
        if count.hasPrefix("(") {
            _ = try await fixture.redis.send("DEL", .string(units))
            _ = try await fixture.redis.send("SET", .string(units), "not a hash")
        } else {
            _ = try await fixture.redis.send("HSET", .string(units), "mallory", .string(count))
        }
        #expect(try await fixture.gateway.reserve(basketId, consumer: "mallory").status == 503, "fails closed")
        try await Self.auditFindsAndOnceRepairs(fixture, basketId, kind: "books")
        #expect(try await fixture.redis.send("HGET", .string(units), "mallory").isNull, "the repair rewrote the counts")
        #expect(try await fixture.redis.send("HGET", .string(units), "c1").int == 1, "the others' counts are kept")
        #expect(try await fixture.gateway.reserve(basketId, consumer: "mallory").status == 201)
        #expect(try await fixture.gateway.reserve(basketId, consumer: "mallory").errorCode == "limit_exceeded", "the limit holds again")
        await fixture.stop()
    }

    @Test(
        "a basket field the scripts cannot read (which stops the basket) is found by the audit and rewritten by the repair",
        arguments: [("mismatch", "x"), ("hold", "+600"), ("stock", "+7"), ("seq", "1000000000000000")])
    func unreadableBasketField(field: String, value: String) async throws {
        let fixture = try await ReconcilerFixture.start()
        let (basketId, _) = try await Self.prepared(fixture)
        let key = Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId))
        _ = try await fixture.redis.send("HSET", .string(key), .string(field), .string(value))
        #expect(try await fixture.gateway.reserve(basketId, consumer: "mallory").status == 503, "fails closed")
        try await Self.auditFindsAndOnceRepairs(fixture, basketId, kind: "books")
        #expect(try await fixture.redis.send("HGET", .string(key), .string(field)).string != value, "the repair rewrote it")
        #expect(try await fixture.gateway.reserve(basketId, consumer: "mallory").status == 201, "served again")
        #expect(try await Self.grants(fixture, basketId, attempts: 10) == 6)
        await fixture.stop()
    }

    @Test("a reservation key of the wrong type is found by the audit and rewritten by the repair (the repair failed on it for good)")
    func wrongTypeReservationKey() async throws {
        let fixture = try await ReconcilerFixture.start()
        let (basketId, ids) = try await Self.prepared(fixture)
        let key = Keyspace.reservation(ids[1], partition: Keyspace.partition(ofBasket: basketId))
        _ = try await fixture.redis.send("DEL", .string(key))
        _ = try await fixture.redis.send("SET", .string(key), "not a hash")
        try await Self.auditFindsAndOnceRepairs(fixture, basketId, kind: nil)
        #expect(try await fixture.gateway.request(.GET, "/v1/reservations/\(ids[1])").json?["status"]?.stringValue == "pending")
        #expect(
            try await fixture.redis.send("HGET", .string(Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId))), "maint")
                .isNull, "the repair ended")
        #expect(try await Self.grants(fixture, basketId, attempts: 10) == 7)
        await fixture.stop()
    }

    @Test("a basket whose keys were deleted is rebuilt from Postgres, reservations included")
    func deletedBasket() async throws {
        let fixture = try await ReconcilerFixture.start()
        let (basketId, ids) = try await Self.prepared(fixture)
        let partition = Keyspace.partition(ofBasket: basketId)
        var keys: [RedisArgument] = [.string(Keyspace.basket(basketId, partition: partition))]
        keys += ids.map { .string(Keyspace.reservation($0, partition: partition)) }
        keys.append(.string(Keyspace.consumerUnits(basketId: basketId, partition: partition)))
        _ = try await fixture.redis.send(["DEL"] + keys)
        let report = try await Self.audit(fixture)
        #expect(report.status == 1)
        #expect(report.output.contains(basketId) && report.output.contains("missing_in_redis"), "\(report.output)")
        try await Self.once(fixture)
        #expect(try await Self.audit(fixture).status == 0)
        let basket = try await fixture.gateway.basket(basketId)
        #expect(basket["stock"]?.int == 7)
        #expect(basket["pending"]?.int == 2)
        #expect(basket["confirmed"]?.int == 1)
        #expect(try await fixture.gateway.request(.GET, "/v1/reservations/\(ids[0])").json?["status"]?.stringValue == "confirmed")
        // The per-consumer limit survived: c1 still holds its one unit.
        #expect(try await fixture.gateway.reserve(basketId, consumer: "c1").errorCode == "limit_exceeded")
        #expect(try await Self.grants(fixture, basketId, attempts: 10) == 7)
        await fixture.stop()
    }

    @Test("after Redis is flushed entirely, everything is rebuilt and the right stock sells")
    func flushedRedis() async throws {
        let fixture = try await ReconcilerFixture.start()
        let (basketId, ids) = try await Self.prepared(fixture)
        let (otherId, _) = try await Self.prepared(fixture)
        _ = try await fixture.redis.send("FLUSHALL")
        let report = try await Self.audit(fixture)
        #expect(report.status == 1)
        #expect(report.output.contains(basketId) && report.output.contains(otherId), "\(report.output)")
        try await Self.once(fixture)
        #expect(try await Self.audit(fixture).status == 0)
        #expect(try await fixture.gateway.request(.GET, "/v1/reservations/\(ids[1])").json?["status"]?.stringValue == "pending")
        // The held unit of a reservation rebuilt from Postgres still expires or cancels once.
        let cancelled = try await fixture.gateway.request(.DELETE, "/v1/reservations/\(ids[1])")
        #expect(cancelled.json?["status"]?.stringValue == "cancelled")
        #expect(try await Self.grants(fixture, basketId, attempts: 12) == 8)
        #expect(try await Self.grants(fixture, otherId, attempts: 12) == 7)
        try await Self.once(fixture)
        #expect(try await fixture.postgresBasket(basketId)?.stock == 0)
        #expect(try await Self.audit(fixture).status == 0)
        await fixture.stop()
    }

    @Test("Postgres stopped for 10 s while reservations continue and run is running: it catches up, nothing lost or doubled")
    func postgresOutage() async throws {
        let server = try PostgresServerProcess()
        try server.start()
        let redisServer = try RedisServerProcess(appendOnly: false)
        try await redisServer.start()
        let gateway = try await GatewayHarness.start(redisURL: redisServer.url)
        let postgres = PostgresClient(url: server.url, size: 2)
        try await Migrator.migrate(postgres, logger: Logger(label: "test"))
        var configuration = ReconcilerConfiguration()
        configuration.reconcilerBatchSize = 200
        var logger = Logger(label: "test-reconciler")
        logger.logLevel = .critical
        let reconciler = Reconciler(
            redis: gateway.redis, postgres: postgres, configuration: configuration,
            consumerName: "outage", logger: logger)
        let running = Task { await reconciler.run() }

        let basketId = TestEnvironment.uniqueId("outage")
        try await gateway.createBasket(basketId, stock: 1_000)
        func count() async throws -> Int {
            try await postgres.query("SELECT count(*) AS n FROM reservations WHERE basket_id = $1", [.text(basketId)])[0]["n"].int ?? 0
        }
        // What Redis holds is the truth Postgres must reach: on a loaded machine a reservation can
        // time out (503, outcome unknown to the client) and still have been applied.
        func held() async throws -> Int { try await gateway.basket(basketId)["pending"]?.int ?? -1 }
        var granted = 0
        for index in 0..<50 where try await gateway.reserve(basketId, consumer: "before-\(index)").status == 201 { granted += 1 }
        #expect(try await eventually(interval: .milliseconds(100)) { try await count() == held() })
        #expect(try await held() >= granted)

        try server.stop()
        let outageEnds = ContinuousClock.now.advanced(by: .seconds(10))
        var index = 0
        while ContinuousClock.now < outageEnds {
            if try await gateway.reserve(basketId, consumer: "during-\(index)").status == 201 { granted += 1 }
            index += 1
            try await Task.sleep(for: .milliseconds(25))
        }
        try server.start()
        for index in 0..<50 where try await gateway.reserve(basketId, consumer: "after-\(index)").status == 201 { granted += 1 }

        #expect(try await eventually(interval: .milliseconds(100)) { try await count() == held() })
        let total = try await held()
        #expect(total >= granted, "every 201 is held")
        let summary = try await postgres.query(
            "SELECT count(*) AS n, count(DISTINCT id) AS d FROM reservations WHERE basket_id = $1", [.text(basketId)])
        #expect(summary[0]["n"].int == total)
        #expect(summary[0]["d"].int == total)
        #expect(
            try await eventually(interval: .milliseconds(100)) {
                try await postgres.withConnection { try BasketStore.read($0, basketId) }?.stock == 1_000 - total
            })
        #expect(try await gateway.basket(basketId)["stock"]?.int == 1_000 - total)
        running.cancel()
        _ = await running.value
        await gateway.stop()
        await postgres.shutdown()
        try? server.stop()
        redisServer.stop()
    }

    @Test("reconciler run stopped with SIGTERM while Postgres is frozen (SIGSTOP) exits in bounded time; nothing is lost")
    func sigtermWithFrozenPostgres() async throws {
        let server = try PostgresServerProcess()
        try server.start()
        let redisServer = try RedisServerProcess(appendOnly: false)
        try await redisServer.start()
        let gateway = try await GatewayHarness.start(redisURL: redisServer.url)
        let postgres = PostgresClient(url: server.url, size: 1)
        try await Migrator.migrate(postgres, logger: Logger(label: "test"))
        let environment = [
            "REDIS_URL": redisServer.url, "DATABASE_URL": server.url, "RECONCILER_METRICS_PORT": "0", "SHUTDOWN_GRACE_SECONDS": "2",
            "LOG_LEVEL": "error",
        ]
        let reconciler = try ProductProcess.start("reconciler", ["run"], environment: environment)
        let basketId = TestEnvironment.uniqueId("frozen")
        try await gateway.createBasket(basketId, stock: 100)
        var granted = 0
        for index in 0..<5 where try await gateway.reserve(basketId, consumer: "before-\(index)").status == 201 { granted += 1 }
        func count() async throws -> Int {
            try await postgres.query("SELECT count(*) AS n FROM reservations WHERE basket_id = $1", [.text(basketId)])[0]["n"].int ?? 0
        }
        #expect(try await eventually(interval: .milliseconds(100)) { try await count() == granted })

        try server.freeze(true)
        // New events: the reconciler's next batch blocks on the frozen server.
        for index in 0..<5 where try await gateway.reserve(basketId, consumer: "during-\(index)").status == 201 { granted += 1 }
        try await Task.sleep(for: .milliseconds(500))
        reconciler.signal(SIGTERM)
        // Without a bound it would wait for Postgres forever; finish() fails after 120 s.
        let stopped = try await reconciler.finish(timeout: .seconds(120))
        #expect(stopped.status == 0, "\(stopped.output)")
        try server.freeze(false)

        let once = try await ProductProcess.run("reconciler", ["once"], environment: environment)
        #expect(once.status == 0, "\(once.output)")
        #expect(try await count() == granted, "every 201 reached Postgres after the restart")
        await gateway.stop()
        await postgres.shutdown()
        try? server.stop()
        redisServer.stop()
    }

    @Test("Redis (AOF, appendfsync always) SIGKILLed under load and restarted: every 201 is in Redis, and after once in Postgres exactly once")
    func redisKilledUnderLoad() async throws {
        let redisServer = try RedisServerProcess(appendOnly: true)  // appendfsync always
        try await redisServer.start()
        let database = try await TestDatabase.create()
        let gateway = try await GatewayHarness.start(redisURL: redisServer.url)
        let postgres = PostgresClient(url: database.url, size: 2)
        try await Migrator.migrate(postgres, logger: Logger(label: "test"))
        let basketId = TestEnvironment.uniqueId("aofkill")
        // Holds of a day: on a loaded machine this test can outlast the default 10 minutes, and a
        // hold that expires before the checks below is no longer pending (not a lost 201).
        try await gateway.createBasket(basketId, stock: 1_000_000, holdSeconds: 86_400)
        let tally = LoadTally()

        let load = tally.load(clients: 16) { client, attempt in
            try await gateway.reserve(basketId, consumer: "k\(client)-\(attempt)")
        }
        // Kill it in the middle of the load (after real progress, polled, not timed).
        try await tally.progress(300)
        redisServer.kill()
        let grantedBeforeRestart = tally.granted.withLock { $0.count }
        try await Task.sleep(for: .milliseconds(200))
        tally.stop.store(true, ordering: .relaxed)
        await load.value
        let granted = tally.granted.withLock { $0 }
        #expect(granted.count >= grantedBeforeRestart)
        try await redisServer.start()

        // Every 201 survived the crash in Redis (the gateway reconnects by itself).
        #expect(try await eventually(interval: .milliseconds(100)) { try await gateway.request(.GET, "/healthz").status == 200 })
        var missing: [String] = []
        for id in granted {
            let response = try await gateway.request(.GET, "/v1/reservations/\(id)")
            if response.json?["status"]?.stringValue != "pending" { missing.append(id) }
        }
        #expect(missing.isEmpty, "\(missing.count) of \(granted.count) reservations answered 201 are gone from redis")

        let environment = ["REDIS_URL": redisServer.url, "DATABASE_URL": database.url]
        let once = try await ProductProcess.run("reconciler", ["once"], environment: environment)
        #expect(once.status == 0, "\(once.output)")
        let rows = try await postgres.query(
            "SELECT id FROM reservations WHERE basket_id = $1 AND status = 'pending'", [.text(basketId)]
        ).compactMap { $0["id"].string }
        #expect(Set(granted).isSubset(of: Set(rows)), "every 201 in postgres")
        #expect(Set(rows).count == rows.count)
        // Postgres holds exactly what Redis holds (201s plus any request applied whose answer was lost).
        #expect(try await gateway.basket(basketId)["pending"]?.int == rows.count)
        let audit = try await ProductProcess.run("reconciler", ["audit"], environment: environment)
        #expect(audit.status == 0, "\(audit.output)")
        await gateway.stop()
        await postgres.shutdown()
        await database.drop()
        redisServer.stop()
    }
}
