import Foundation
import PostgresClient
import ReconcilerCore
import RedisClient
import ReservationCore
import TestSupport
import Testing

/// Issue 19's figures: a rebuild after FLUSHALL with 100,000 historical reservations in other
/// baskets. A measurement, not a check of speed: run with RECONCILER_MEASURE=1 (and
/// OLD_RECONCILER=<path> to compare with another build's `once`).
@Suite("Rebuild measurement", .enabled(if: ProcessInfo.processInfo.environment["RECONCILER_MEASURE"] != nil))
struct RebuildMeasurement {
    @Test("rebuild after FLUSHALL: the live basket first, Redis holds the live data, not the history")
    func rebuild() async throws {
        let fixture = try await ReconcilerFixture.start()
        let live = TestEnvironment.uniqueId("zzz-live")
        try await fixture.gateway.createBasket(live, stock: 10_000)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in 0..<8 {
                group.addTask {
                    for index in 0..<100 { _ = try await fixture.gateway.reserve(live, consumer: "live-\(client)-\(index)") }
                }
            }
            try await group.waitForAll()
        }
        _ = try await fixture.postgres.execute(
            "INSERT INTO baskets (id, stock, capacity) SELECT 'hist-' || i, 100, 100 FROM generate_series(0, 999) AS i")
        _ = try await fixture.postgres.execute(
            """
            INSERT INTO reservations (id, basket_id, consumer_id, quantity, status, expires_at, updated_at)
            SELECT 'h-' || i, 'hist-' || (i % 1000), 'c-' || i, 1, 'cancelled', now() - interval '8 days', now() - interval '8 days'
            FROM generate_series(1, 100000) AS i
            """)
        try await fixture.once()
        let pending = try await fixture.gateway.basket(live)["pending"]?.int ?? 0
        print("measure: live basket holds \(pending) pending; 1,000 other baskets, 100,000 historical reservations")

        _ = try await fixture.redis.send("FLUSHALL")
        let clock = ContinuousClock()
        let started = clock.now
        let reconciler = fixture.reconciler()
        let rebuild = Task { try await reconciler.rebuildUnmarkedPartitions() }
        #expect(
            try await eventually(interval: .milliseconds(5)) {
                (try? await fixture.redis.send("HGET", .string(Keyspace.basket(live, partition: Keyspace.partition(ofBasket: live))), "pending"))?
                    .int == pending
            })
        let liveAt = clock.now - started
        let lost = try await rebuild.value
        let allAt = clock.now - started
        let keys = try await fixture.redis.send("DBSIZE").int ?? -1
        print("measure: new rebuild: live basket back after \(liveAt), all \(lost) baskets after \(allAt); Redis keys after: \(keys)")

        if let old = ProcessInfo.processInfo.environment["OLD_RECONCILER"] {
            _ = try await fixture.redis.send("FLUSHALL")
            let oldStarted = clock.now
            let process = try Subprocess([old, "once"], environment: fixture.environment, captureOutput: true)
            let result = try await process.finish(timeout: .seconds(1200))
            let oldKeys = try await fixture.redis.send("DBSIZE").int ?? -1
            print("measure: old once after FLUSHALL: status \(result.status) after \(clock.now - oldStarted); Redis keys after: \(oldKeys)")
        }
        await fixture.stop()
    }
}
