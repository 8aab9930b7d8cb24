import Foundation
import NIOHTTP1
import PostgresClient
import RedisClient
import ReservationCore
import TestSupport
import Testing

@testable import ReconcilerCore

/// Sale windows (contract v2), the reconciler's side: Postgres keeps `opens_at`, `closes_at` and
/// `paused` from the events, a redelivered older event never takes a PATCH back, a repair of a
/// basket Redis lost restores them, and the audit compares them.
@Suite("Sale windows in Postgres")
struct SaleWindowReconcilerTests {
    static func basketKey(_ basketId: String) -> String { Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId)) }

    static func patch(_ fixture: ReconcilerFixture, _ basketId: String, _ fields: [String: JSONValueLiteral]) async throws
        -> TestHTTPResponse
    {
        try await fixture.gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: fixture.gateway.admin, body: HTTPTestClient.json(fields))
    }

    /// The row's sale columns as Postgres holds them (times in ms).
    static func columns(_ fixture: ReconcilerFixture, _ basketId: String) async throws -> (opens: Int?, closes: Int?, paused: String?) {
        let rows = try await fixture.postgres.query(
            """
            SELECT (extract(epoch FROM opens_at) * 1000)::bigint AS opens, (extract(epoch FROM closes_at) * 1000)::bigint AS closes,
                   paused FROM baskets WHERE id = $1
            """, [.text(basketId)])
        let row = try #require(rows.first)
        return (row["opens"].int, row["closes"].int, row["paused"].string)
    }

    @Test("window and pause reach Postgres; an older event redelivered keeps them; a basket Redis lost gets them back, selling nothing meanwhile")
    func keptAndRestored() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("window")
        // Already open (so a unit can be held), closing in two hours; milliseconds kept exact.
        let now = WallClock.nowMilliseconds() / 1000 * 1000
        let opensAt = now - 60_000 + 123
        let closesAt = now + 7_200_000 + 456
        let created = try await fixture.gateway.request(
            .PUT, "/v1/baskets/\(basketId)", headers: fixture.gateway.admin,
            body: HTTPTestClient.json([
                "stock": 10, "maxPerConsumer": 2, "opensAt": .string(RFC3339.format(milliseconds: opensAt)),
                "closesAt": .string(RFC3339.format(milliseconds: closesAt)),
            ]))
        #expect(created.status == 201, "\(created.json.map { "\($0)" } ?? "")")
        #expect(try await fixture.gateway.reserve(basketId, consumer: "early").status == 201)
        let paused = try await Self.patch(fixture, basketId, ["paused": .bool(true)])
        #expect(paused.status == 200 && paused.json?["state"]?.stringValue == "paused")
        try await fixture.once()

        let window = BasketSettings(
            holdSeconds: 600, maxPerConsumer: 2, opensAtMilliseconds: opensAt, closesAtMilliseconds: closesAt, paused: true)
        let row = try #require(try await fixture.postgresBasket(basketId))
        #expect(row.settings == window)
        #expect(row.settingsSeq == row.redisSeq, "the PATCH was the latest change")
        let stored = try await Self.columns(fixture, basketId)
        #expect(stored.opens == Int(opensAt) && stored.closes == Int(closesAt) && stored.paused == "t")

        // The basket_created event delivered again (seq 1, not paused) changes nothing.
        let replay = StreamEntry(
            stream: Keyspace.stream(Keyspace.partition(ofBasket: basketId)), id: "1-0",
            fields: [
                "type": "basket_created", "basket": basketId, "seq": "1", "stock": "10", "capacity": "10", "at": "1", "hold": "600",
                "max": "2", "opens": String(opensAt), "closes": String(closesAt), "paused": "0",
            ])
        try await fixture.postgres.withConnection { _ = try EventApplier.apply([replay], on: $0) }
        #expect(try await fixture.postgresBasket(basketId)?.settings == window)

        // Redis loses the basket: nothing sells while it is lost.
        _ = try await fixture.redis.send("DEL", .string(Self.basketKey(basketId)))
        #expect(try await fixture.gateway.reserve(basketId, consumer: "while-lost").status != 201)
        try await fixture.once()
        let view = try await fixture.gateway.basket(basketId)
        #expect(view["opensAt"]?.stringValue == RFC3339.format(milliseconds: opensAt))
        #expect(view["closesAt"]?.stringValue == RFC3339.format(milliseconds: closesAt))
        #expect(view["paused"] == .bool(true) && view["state"]?.stringValue == "paused", "\(view)")
        #expect(view["stock"]?.int == 9 && view["pending"]?.int == 1)
        #expect(try await fixture.gateway.reserve(basketId, consumer: "after-repair").errorCode == "sale_paused")
        try await fixture.once()
        #expect(try await fixture.postgresBasket(basketId)?.settings == window)
        #expect(try await fixture.reconciler().audit(repair: false).isEmpty)

        // Unpaused, it sells again, and Postgres follows.
        #expect(try await Self.patch(fixture, basketId, ["paused": .bool(false)]).status == 200)
        #expect(try await fixture.gateway.reserve(basketId, consumer: "after-unpause").status == 201)
        try await fixture.once()
        #expect(try await fixture.postgresBasket(basketId)?.settings.paused == false)
        await fixture.stop()
    }

    @Test("the audit reports settings that differ once Postgres is caught up; the repair writes Redis's to Postgres")
    func auditComparesSettings() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("pausedrift")
        try await fixture.gateway.createBasket(basketId, stock: 5)
        try await fixture.once()
        #expect(try await fixture.reconciler().audit(repair: false).isEmpty)

        _ = try await fixture.postgres.execute("UPDATE baskets SET paused = true WHERE id = $1", [.text(basketId)])
        let drifts = try await fixture.reconciler().audit(repair: false)
        #expect(
            drifts.contains { $0.basketId == basketId && $0.kind == .settings && $0.detail.hasPrefix("settings differ") && !$0.postgresBehind },
            "\(drifts)")
        try await fixture.once()
        #expect(try await fixture.postgresBasket(basketId)?.settings.paused == false)
        #expect(try await fixture.reconciler().audit(repair: false).isEmpty)
        #expect(try await fixture.gateway.reserve(basketId, consumer: "c").status == 201, "Redis was never paused")

        // A time Postgres holds that the domain rejects is reported, never guessed at.
        _ = try await fixture.postgres.execute("UPDATE baskets SET opens_at = 'infinity' WHERE id = $1", [.text(basketId)])
        let malformed = try await fixture.reconciler().audit(repair: false)
        #expect(malformed.contains { $0.basketId == basketId && $0.detail.contains("cannot be read back") }, "\(malformed)")
        await #expect(throws: BasketStoreError.self) { try await fixture.postgresBasket(basketId) }
        await fixture.stop()
    }
}

/// The waiting room's settings, the reconciler's side: Postgres keeps `waitingRoom` (the queue
/// itself lives in Redis only), a basket Redis lost gets its room back, removing it clears them.
@Suite("Waiting rooms in Postgres")
struct WaitingRoomReconcilerTests {
    static func columns(_ fixture: ReconcilerFixture, _ basketId: String) async throws -> (rate: Int?, seconds: Int?) {
        let rows = try await fixture.postgres.query(
            "SELECT room_admit_per_minute, room_admission_seconds FROM baskets WHERE id = $1", [.text(basketId)])
        let row = try #require(rows.first)
        return (row["room_admit_per_minute"].int, row["room_admission_seconds"].int)
    }

    @Test("waitingRoom reaches Postgres, a repair of a basket Redis lost restores it, PATCH null clears it")
    func keptAndRestored() async throws {
        let fixture = try await ReconcilerFixture.start()
        let basketId = TestEnvironment.uniqueId("room")
        let created = try await fixture.gateway.request(
            .PUT, "/v1/baskets/\(basketId)", headers: fixture.gateway.admin,
            body: HTTPTestClient.json(["stock": 4, "waitingRoom": .raw(#"{"admitPerMinute":90,"admissionSeconds":120}"#)]))
        #expect(created.status == 201, "\(created.text)")
        try await fixture.once()
        let stored = try await Self.columns(fixture, basketId)
        #expect(stored.rate == 90 && stored.seconds == 120)
        #expect(try await fixture.postgresBasket(basketId)?.settings.waitingRoom == WaitingRoomSettings(admitPerMinute: 90, admissionSeconds: 120))

        // Redis loses the basket: rebuilt with its room (so nobody reserves without an admission).
        _ = try await fixture.redis.send("DEL", .string(SaleWindowReconcilerTests.basketKey(basketId)))
        try await fixture.once()
        let view = try await fixture.gateway.basket(basketId)
        #expect(view["waitingRoom"]?["admitPerMinute"]?.int == 90 && view["waitingRoom"]?["admissionSeconds"]?.int == 120, "\(view)")
        let refused = try await fixture.gateway.reserve(basketId, consumer: "no-admission")
        #expect(refused.status == 403 && refused.json?["error"]?.stringValue == "admission_required")

        let removed = try await fixture.gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: fixture.gateway.admin, body: HTTPTestClient.json(["waitingRoom": .null]))
        #expect(removed.status == 200)
        try await fixture.once()
        let cleared = try await Self.columns(fixture, basketId)
        #expect(cleared.rate == nil && cleared.seconds == nil)
        // and the audit finds nothing to mend
        #expect(try await fixture.gateway.reserve(basketId, consumer: "anyone").status == 201)
    }
}
