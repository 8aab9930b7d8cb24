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

/// Issue 19: a repair touches only what drifted, writes back only what Redis should hold, sees a
/// rollback, and a failing repair stops nothing else.
@Suite("Repairs that touch only what drifted")
struct RepairIsolationTests {
    /// What the traffic tasks saw, shared with the test.
    final class Traffic: Sendable {
        let stop = Atomic<Bool>(false)
        let answers = Mutex<[String: [Int]]>([:])
    }

    static func audit(_ fixture: ReconcilerFixture) async throws -> (status: Int32, output: String) {
        try await ProductProcess.run("reconciler", ["audit"], environment: fixture.environment)
    }

    static func once(_ fixture: ReconcilerFixture) async throws {
        let result = try await ProductProcess.run("reconciler", ["once"], environment: fixture.environment)
        #expect(result.status == 0, "\(result.output)")
    }

    static func basketKey(_ basketId: String) -> String { Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId)) }

    static func reservationKey(_ id: String) -> String {
        Keyspace.reservation(id, partition: ReservationIdGenerator.partition(of: id) ?? Keyspace.partition(ofForeignId: id))
    }

    /// Reserves one unit for each of `consumers` and returns the reservation ids.
    static func reserve(_ fixture: ReconcilerFixture, _ basketId: String, _ consumers: [String]) async throws -> [String] {
        var ids: [String] = []
        for consumer in consumers {
            let response = try await fixture.gateway.reserve(basketId, consumer: consumer)
            ids.append(try #require(response.json?["reservationId"]?.stringValue, "\(response.status) \(response.text)"))
        }
        return ids
    }

    /// `reconciler run` as a process of its own (auditing every second), and where its metrics are.
    static func runProcess(_ fixture: ReconcilerFixture) async throws -> (process: Subprocess, metricsPort: Int) {
        let port = try freePort()
        var environment = fixture.environment
        environment["AUDIT_INTERVAL_SECONDS"] = "1"
        environment["RECONCILER_METRICS_PORT"] = String(port)
        environment["LOG_LEVEL"] = "critical"
        let process = try ProductProcess.start("reconciler", ["run"], environment: environment)
        return (process, port)
    }

    /// The sum of a metric's series in the process's `/metrics` (nil while it does not answer).
    static func metric(_ name: String, port: Int) async -> Double? {
        guard let response = try? await HTTPTestClient.request(port: port, method: .GET, path: "/metrics"), response.status == 200 else {
            return nil
        }
        var total = 0.0
        for line in response.text.split(separator: "\n") where line.hasPrefix(name + " ") || line.hasPrefix(name + "{") {
            total += line.split(separator: " ").last.flatMap { Double($0) } ?? 0
        }
        return total
    }

    @Test("the reconciler run process beside a basket whose repair always fails: the other basket's events reach Postgres")
    func failingRepairUnderRunProcess() async throws {
        let fixture = try await ReconcilerFixture.start()
        let failing = "aaa-" + TestEnvironment.uniqueId("failing")
        let drifted = "zzz-" + TestEnvironment.uniqueId("drifted")
        let live = TestEnvironment.uniqueId("live")
        for basket in [failing, drifted, live] { try await fixture.gateway.createBasket(basket, stock: 10_000) }
        let held = try await Self.reserve(fixture, failing, ["f1"])
        _ = try await Self.reserve(fixture, drifted, ["d1"])
        try await fixture.once()
        _ = try await fixture.postgres.execute("UPDATE reservations SET expires_at = 'infinity' WHERE id = $1", [.text(held[0])])
        _ = try await fixture.redis.send("HINCRBY", .string(Self.basketKey(failing)), "stock", 5)
        _ = try await fixture.redis.send("HINCRBY", .string(Self.basketKey(drifted)), "stock", 7)
        let (process, port) = try await Self.runProcess(fixture)
        // Let its first audits (and failing repairs) run before the sale's events: this pause only
        // lets the test fail on a reconciler that stops; the new one passes whatever the timing.
        try await Task.sleep(for: .seconds(3))
        let granted = try await Self.reserve(fixture, live, (0..<40).map { "l\($0)" })
        #expect(
            try await eventually(interval: .milliseconds(200)) { try await fixture.postgresReservations(live).count == granted.count },
            "every event of another basket reaches Postgres")
        #expect(try await eventually(interval: .milliseconds(200)) { try await fixture.gateway.basket(drifted)["stock"]?.int == 9_999 })
        #expect(try await eventually(interval: .milliseconds(200)) { (await Self.metric("reconciler_repair_failures_total", port: port) ?? 0) >= 1 })
        process.signal(SIGTERM)
        #expect(try await process.finish(timeout: .seconds(120)).status == 0)
        await fixture.stop()
    }

    @Test("the reconciler run process auditing every second beside cancels and payments: reconciler_repairs_total stays 0")
    func liveTrafficUnderRunProcess() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("traffic")
        try await fixture.gateway.createBasket(basketId, stock: 1_000_000)
        // Many live holds, so each audit spends a while reading them: the window in which a
        // cancel or a payment lands between its reads of the two stores.
        let held = try await withThrowingTaskGroup(of: [String].self) { group in
            for client in 0..<8 {
                group.addTask { try await Self.reserve(fixture, basketId, (0..<250).map { "held-\(client)-\($0)" }) }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
        try await fixture.once()
        let (process, port) = try await Self.runProcess(fixture)
        let shared = Traffic()
        let traffic = Task {
            var attempt = 0
            while !shared.stop.load(ordering: .relaxed) {
                attempt += 1
                try? await Task.sleep(for: .milliseconds(100))
                _ = try? await fixture.gateway.reserve(basketId, consumer: "t-\(attempt)")
                guard attempt < held.count else { continue }
                let id = held[attempt]
                let response =
                    attempt % 2 == 0
                    ? try? await fixture.gateway.request(.DELETE, "/v1/reservations/\(id)")
                    : try? await fixture.gateway.deliverPayment(eventId: "evt-\(id)", reservationId: id)
                if let response { shared.answers.withLock { $0[attempt % 2 == 0 ? "cancel" : "payment", default: []].append(Int(response.status)) } }
            }
        }
        // 30 audits beside the traffic, counted by their distinct finishing times (progress, not a clock).
        var audits: Set<Double> = []
        #expect(
            try await eventually(interval: .milliseconds(200)) {
                if let last = await Self.metric("reconciler_last_audit_timestamp_seconds", port: port), last > 0 { audits.insert(last) }
                return audits.count >= 30
            })
        shared.stop.store(true, ordering: .relaxed)
        await traffic.value
        let repairs = await Self.metric("reconciler_repairs_total", port: port)
        process.signal(SIGTERM)
        _ = try await process.finish(timeout: .seconds(120))
        #expect(repairs == 0, "an uncorrupted basket was repaired \(repairs ?? -1) times under traffic")
        let seen = shared.answers.withLock { $0 }
        #expect((seen["cancel"] ?? []).allSatisfy { $0 == 200 } && (seen["payment"] ?? []).allSatisfy { $0 == 200 }, "\(seen)")
        await fixture.stop()
    }

    @Test("reconciler run stays alive through a basket whose repair always fails: other events reach Postgres, other drift is repaired")
    func failingRepairStopsNothing() async throws {
        let fixture = try await ReconcilerFixture.start()
        // Named so it sorts first: a failure that ended the audit would leave the other unrepaired.
        let failing = "aaa-" + TestEnvironment.uniqueId("failing")
        let drifted = "zzz-" + TestEnvironment.uniqueId("drifted")
        let live = TestEnvironment.uniqueId("live")
        for basket in [failing, drifted, live] { try await fixture.gateway.createBasket(basket, stock: 10_000) }
        let held = try await Self.reserve(fixture, failing, ["f1", "f2"])
        _ = try await Self.reserve(fixture, drifted, ["d1"])
        try await fixture.once()
        // A row the repair cannot read back (a hold that never ends), and drift on both baskets.
        _ = try await fixture.postgres.execute("UPDATE reservations SET expires_at = 'infinity' WHERE id = $1", [.text(held[0])])
        _ = try await fixture.redis.send("HINCRBY", .string(Self.basketKey(failing)), "stock", 5)
        _ = try await fixture.redis.send("HINCRBY", .string(Self.basketKey(drifted)), "stock", 7)

        let reconciler = fixture.reconciler()
        let running = Task { await reconciler.run() }
        let granted = try await Self.reserve(fixture, live, (0..<40).map { "l\($0)" })
        #expect(
            try await eventually(interval: .milliseconds(100)) {
                try await fixture.postgresReservations(live).count == granted.count
            }, "every event of another basket reaches Postgres")
        #expect(
            try await eventually(interval: .milliseconds(100)) {
                try await fixture.gateway.basket(drifted)["stock"]?.int == 9_999
            }, "the other drifted basket is repaired")
        #expect(try await eventually(interval: .milliseconds(100)) { reconciler.housekeeping.repairFailures >= 1 })
        // More events after the failures: still flowing.
        let later = try await Self.reserve(fixture, live, (0..<20).map { "m\($0)" })
        #expect(
            try await eventually(interval: .milliseconds(100)) {
                try await fixture.postgresReservations(live).count == granted.count + later.count
            })
        #expect(try await fixture.gateway.basket(failing)["stock"]?.int == 10_003, "the failing basket was left as it was")
        running.cancel()
        _ = await running.value
        await fixture.stop()
    }

    @Test("history older than the retention is never written back: not by a repair, not by the rebuild after FLUSHALL")
    func historyOlderThanRetention() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("history")
        try await fixture.gateway.createBasket(basketId, stock: 1_000)
        let ids = try await Self.reserve(fixture, basketId, (0..<40).map { "h\($0)" })
        for id in ids.prefix(30) { #expect(try await fixture.gateway.request(.DELETE, "/v1/reservations/\(id)").status == 200) }
        try await fixture.once()
        let old = Array(ids.prefix(20))
        let recent = Array(ids[20..<30])
        let active = Array(ids[30...])
        // Twenty finished 8 days ago (Redis's retention dropped them), ten 6 days ago (1 day left).
        _ = try await fixture.postgres.execute(
            "UPDATE reservations SET updated_at = now() - interval '8 days' WHERE id = ANY($1::text[])", [.textArray(old)])
        _ = try await fixture.postgres.execute(
            "UPDATE reservations SET updated_at = now() - interval '6 days' WHERE id = ANY($1::text[])", [.textArray(recent)])
        _ = try await fixture.redis.send(["DEL"] + old.map { .string(Self.reservationKey($0)) })
        func exists(_ ids: [String]) async throws -> Int {
            var count = 0
            for id in ids where try await fixture.redis.send("EXISTS", .string(Self.reservationKey(id))).int == 1 { count += 1 }
            return count
        }

        // A repair for a corrupt counter.
        _ = try await fixture.redis.send("HINCRBY", .string(Self.basketKey(basketId)), "stock", 3)
        try await Self.once(fixture)
        #expect(try await fixture.gateway.basket(basketId)["stock"]?.int == 990)
        #expect(try await exists(old) == 0, "a repair wrote finished history back")

        // The rebuild after a FLUSHALL.
        _ = try await fixture.redis.send("FLUSHALL")
        try await Self.once(fixture)
        #expect(try await Self.audit(fixture).status == 0)
        #expect(try await exists(old) == 0, "the rebuild wrote history older than the retention")
        let recentHeld = try await exists(recent)
        let activeHeld = try await exists(active)
        #expect(recentHeld == recent.count && activeHeld == active.count)
        for id in recent {
            let ttl = try await fixture.redis.send("TTL", .string(Self.reservationKey(id))).int ?? -2
            #expect(ttl > 0 && ttl <= 86_400 + 60, "a finished reservation keeps only what is left of its retention, not \(ttl) s")
        }
        let basket = try await fixture.gateway.basket(basketId)
        #expect(basket["stock"]?.int == 990 && basket["pending"]?.int == 10)
        await fixture.stop()
    }

    @Test("a Redis rollback that undid a capacity decrease: not merged, capacity not raised, audit exits 2 on the oversell")
    func rollbackSeen() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("rollback")
        try await fixture.gateway.createBasket(basketId, stock: 10)
        try await fixture.once()
        // The snapshot Redis will roll back to: capacity 10.
        _ = try await fixture.redis.send("SAVE")
        let adjusted = try await fixture.gateway.request(
            .POST, "/v1/baskets/\(basketId)/stock-adjustments", headers: fixture.gateway.admin, body: HTTPTestClient.json(["delta": -5]))
        #expect(adjusted.status == 200, "\(adjusted.text)")
        try await fixture.once()
        #expect(try await fixture.postgresBasket(basketId)?.capacity == 5)
        // Redis crashes and comes back from the older snapshot.
        fixture.redisServer.kill()
        try await fixture.redisServer.start()
        #expect(try await eventually(interval: .milliseconds(100)) { (try? await fixture.gateway.basket(basketId))?["capacity"]?.int == 10 })
        var sold = 0
        for index in 0..<12 where try await fixture.gateway.reserve(basketId, consumer: "rb\(index)").status == 201 { sold += 1 }
        #expect(sold == 10)
        _ = try await fixture.reconciler().drain()
        #expect(try await fixture.postgresBasket(basketId)?.capacity == 5, "the rolled-back capacity was merged into Postgres")
        let report = try await Self.audit(fixture)
        #expect(report.status == 2, "\(report.output)")
        #expect(report.output.contains(basketId) && report.output.contains("oversold"), "\(report.output)")
        try await Self.once(fixture)
        let basket = try await fixture.gateway.basket(basketId)
        #expect(basket["capacity"]?.int == 5 && basket["stock"]?.int == 0 && basket["pending"]?.int == 10)
        #expect(try await fixture.postgresBasket(basketId)?.capacity == 5)
        #expect(try await fixture.postgresBasket(basketId)?.rolledBack == false)
        #expect(try await Self.audit(fixture).status == 2, "the oversell stays reported")
        #expect(try await fixture.gateway.reserve(basketId, consumer: "after").errorCode == "sold_out")
        await fixture.stop()
    }

    @Test("a corrupt seq in Redis (Int.max, garbage) never traps the repair: the basket is rebuilt and numbered past Postgres")
    func corruptSeq() async throws {
        let fixture = try await ReconcilerFixture.start()
        for corrupt in ["9223372036854775807", "not-a-number"] {
            let basketId = TestEnvironment.uniqueId("seq")
            try await fixture.gateway.createBasket(basketId, stock: 10)
            _ = try await Self.reserve(fixture, basketId, ["s1", "s2"])
            try await fixture.once()
            _ = try await fixture.redis.send("HSET", .string(Self.basketKey(basketId)), "seq", .string(corrupt), "stock", 4)
            try await Self.once(fixture)
            let seq = try await fixture.redis.send("HGET", .string(Self.basketKey(basketId)), "seq").string.flatMap(Int.init)
            let postgresSeq = try #require(try await fixture.postgresBasket(basketId)?.redisSeq)
            #expect(seq != nil && seq! < 1 << 53 && seq == postgresSeq)
            #expect(try await fixture.gateway.basket(basketId)["stock"]?.int == 8)
            #expect(try await Self.audit(fixture).status == 0)
        }
        await fixture.stop()
    }

    @Test("a partition without its marker: lost baskets go into the lost set, the marker is set, each rebuild takes its id off the set")
    func partitionMarkers() async throws {
        let fixture = try await ReconcilerFixture.start()
        let healthy = TestEnvironment.uniqueId("marked")
        let broken = TestEnvironment.uniqueId("unreadable")
        for basket in [healthy, broken] { try await fixture.gateway.createBasket(basket, stock: 10) }
        _ = try await Self.reserve(fixture, healthy, ["p1"])
        let held = try await Self.reserve(fixture, broken, ["p2"])
        try await fixture.once()
        for partition in 0..<Keyspace.partitionCount {
            #expect(try await fixture.redis.send("EXISTS", .string(Keyspace.partitionMarker(partition))).int == 1)
        }
        // The broken basket's repair fails every time: it stays in its lost set (503, not 404).
        _ = try await fixture.postgres.execute("UPDATE reservations SET expires_at = 'infinity' WHERE id = $1", [.text(held[0])])
        _ = try await fixture.redis.send("FLUSHALL")
        let reconciler = fixture.reconciler()
        #expect(try await reconciler.rebuildUnmarkedPartitions() == 2)
        let lostHealthy = try await fixture.redis.send(
            "SISMEMBER", .string(Keyspace.lostBaskets(Keyspace.partition(ofBasket: healthy))), .string(healthy))
        let lostBroken = try await fixture.redis.send(
            "SISMEMBER", .string(Keyspace.lostBaskets(Keyspace.partition(ofBasket: broken))), .string(broken))
        #expect(lostHealthy.int == 0 && lostBroken.int == 1)
        #expect(try await fixture.gateway.basket(healthy)["pending"]?.int == 1)
        #expect(try await fixture.redis.send("EXISTS", .string(Keyspace.partitionMarker(Keyspace.partition(ofBasket: healthy)))).int == 1)
        #expect(reconciler.housekeeping.repairFailures == 1)
        // Nothing to do while every marker is there.
        #expect(try await reconciler.rebuildUnmarkedPartitions() == 0)

        // `run` checks the markers every second, long before its next audit.
        _ = try await fixture.postgres.execute("UPDATE reservations SET expires_at = now() + interval '1 hour' WHERE id = $1", [.text(held[0])])
        _ = try await fixture.redis.send("FLUSHALL")
        var configuration = ReconcilerConfiguration()
        configuration.auditIntervalSeconds = 3_600
        var logger = Logger(label: "test-reconciler")
        logger.logLevel = .critical
        let runner = Reconciler(
            redis: fixture.redis, postgres: fixture.postgres, configuration: configuration, consumerName: "markers", logger: logger)
        let running = Task { await runner.run() }
        #expect(
            try await eventually(interval: .milliseconds(100)) {
                let first = try? await fixture.gateway.basket(healthy)
                let second = try? await fixture.gateway.basket(broken)
                return first?["pending"]?.int == 1 && second?["pending"]?.int == 1
            })
        #expect(runner.housekeeping.audits == 0)
        running.cancel()
        _ = await running.value
        await fixture.stop()
    }

    @Test("after a mass loss the most active basket is rebuilt first")
    func mostActiveFirst() async throws {
        let fixture = try await ReconcilerFixture.start()
        let quiet = TestEnvironment.uniqueId("aaa-quiet")
        let busy = TestEnvironment.uniqueId("zzz-busy")
        for basket in [quiet, busy] { try await fixture.gateway.createBasket(basket, stock: 100) }
        _ = try await Self.reserve(fixture, busy, (0..<5).map { "b\($0)" })
        let quietIds = try await Self.reserve(fixture, quiet, ["q0"])
        _ = try await fixture.gateway.request(.DELETE, "/v1/reservations/\(quietIds[0])")
        try await fixture.once()
        _ = try await fixture.postgres.execute("UPDATE reservations SET updated_at = now() - interval '2 days' WHERE basket_id = $1", [.text(quiet)])
        _ = try await fixture.redis.send("FLUSHALL")
        let reconciler = fixture.reconciler()
        #expect(try await reconciler.mostActiveFirst([quiet, busy]) == [busy, quiet])
        try await Self.once(fixture)
        #expect(try await fixture.gateway.basket(busy)["pending"]?.int == 5)
        await fixture.stop()
    }
}
