import Foundation
import GatewayCore
import NIOHTTP1
import RedisClient
import ReservationCore
import ReservationScripts
import TestSupport
import Testing

/// A basket Redis lost (named in its partition's lost set until the reconciler rebuilds it) is
/// under repair, not absent; a payment never half-applies; one basket under repair never holds
/// up the expiry of its partition.
@Suite("Lost baskets and stalled holds")
struct LostBasketTests {
    @Test("a basket in the lost set answers 503 (reserve, keyed reserve, GET, adjust, create) and stores nothing; once rebuilt, it is served")
    func lostBasketIsUnavailable() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("lost")
        let partition = Keyspace.partition(ofBasket: basketId)
        try await gateway.createBasket(basketId, stock: 5)
        // Redis loses it; the reconciler has named it in the lost set.
        _ = try await gateway.redis.send("DEL", .string(Keyspace.basket(basketId, partition: partition)))
        _ = try await gateway.redis.send("SADD", .string(Keyspace.lostBaskets(partition)), .string(basketId))
        let keyed = try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "during-loss")
        #expect(keyed.status == 503 && keyed.errorCode == "unavailable", "\(keyed.text)")
        #expect(keyed.headers.first(name: "retry-after") != nil)
        #expect(try await gateway.reserve(basketId, consumer: "c2").status == 503)
        #expect(try await gateway.request(.GET, "/v1/baskets/\(basketId)").status == 503)
        let adjust = try await gateway.request(
            .POST, "/v1/baskets/\(basketId)/stock-adjustments", headers: gateway.admin, body: Array(#"{"delta":1}"#.utf8))
        #expect(adjust.status == 503)
        let create = try await gateway.request(.PUT, "/v1/baskets/\(basketId)", headers: gateway.admin, body: Array(#"{"stock":1}"#.utf8))
        #expect(create.status == 503, "no new basket takes a lost one's place")
        let record = Keyspace.idempotency(basketId: basketId, consumerId: "c1", key: "during-loss", partition: partition)
        #expect(try await gateway.redis.send("EXISTS", .string(record)).int == 0, "the 503 is not stored under the key")
        // An unknown basket that was never lost is still 404.
        #expect(try await gateway.reserve(TestEnvironment.uniqueId("never"), consumer: "c").status == 404)
        // Rebuilt (as the repair does: the basket back, its id out of the set): the same key now reserves.
        _ = try await gateway.redis.send(
            "HSET", .string(Keyspace.basket(basketId, partition: partition)), "stock", "5", "pending", "0", "confirmed", "0", "capacity", "5",
            "hold", "600", "max", "1", "seq", "2")
        _ = try await gateway.redis.send("SREM", .string(Keyspace.lostBaskets(partition)), .string(basketId))
        #expect(try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "during-loss").status == 201)
        await gateway.stop()
    }

    @Test("a payment for a reservation whose basket is missing is 503 with no write; the retry after the rebuild is processed, not duplicate")
    func paymentChecksBeforeWriting() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("lostpay")
        let partition = Keyspace.partition(ofBasket: basketId)
        try await gateway.createBasket(basketId, stock: 2)
        let reservation = try await gateway.reserve(basketId, consumer: "c1")
        let reservationId = try #require(reservation.json?["reservationId"]?.stringValue)
        let basketKey = Keyspace.basket(basketId, partition: partition)
        let saved = try await gateway.redis.send("HGETALL", .string(basketKey)).array?.compactMap(\.string) ?? []
        _ = try await gateway.redis.send("DEL", .string(basketKey))
        let eventId = TestEnvironment.uniqueId("ev")
        let first = try await gateway.deliverPayment(eventId: eventId, reservationId: reservationId)
        #expect(first.status == 503, "\(first.text)")
        #expect(try await gateway.redis.send("EXISTS", .string(Keyspace.webhookClaim(eventId: eventId, partition: partition))).int == 0)
        #expect(try await gateway.redis.send("EXISTS", .string(basketKey)).int == 0, "no half basket written")
        _ = try await gateway.redis.send(["HSET", .string(basketKey)] + saved.map { .string($0) })
        let retry = try await gateway.deliverPayment(eventId: eventId, reservationId: reservationId)
        #expect(retry.status == 200 && retry.text.contains("confirmed"), "\(retry.text)")
        #expect(try await gateway.basket(basketId)["confirmed"]?.int == 1)
        await gateway.stop()
    }

    @Test("holds of a basket under repair at the head of the partition do not stop the others from expiring")
    func repairDoesNotStallExpiry() async throws {
        // A Redis of its own: every other gateway in this process runs an expiry loop over the
        // shared one, and would expire these holds first.
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        let gateway = try await GatewayHarness.start(redisURL: server.url, expiryLoop: false)
        // Two baskets in one partition: find a second id that shares the first one's partition.
        let blocked = TestEnvironment.uniqueId("stall")
        let partition = Keyspace.partition(ofBasket: blocked)
        var other = TestEnvironment.uniqueId("free")
        while Keyspace.partition(ofBasket: other) != partition { other = TestEnvironment.uniqueId("free") }
        try await gateway.createBasket(blocked, stock: 600, maxPerConsumer: 1)
        try await gateway.createBasket(other, stock: 5, maxPerConsumer: 1)
        // More due holds of the blocked basket than one page (500), all older than the other's.
        var blockedIds: [String] = []
        for index in 0..<600 {
            let answer = try await gateway.reserve(blocked, consumer: "b\(index)")
            blockedIds.append(try #require(answer.json?["reservationId"]?.stringValue))
        }
        let free = try #require(try await gateway.reserve(other, consumer: "o").json?["reservationId"]?.stringValue)
        for id in blockedIds { try await gateway.makeHoldDue(id) }
        try await gateway.makeHoldDue(free)
        // The blocked basket's holds are due earlier (older scores) than the free one's.
        _ = try await gateway.redis.send("ZADD", .string(Keyspace.holds(partition)), "XX", "1", .string(free))
        for id in blockedIds { _ = try await gateway.redis.send("ZADD", .string(Keyspace.holds(partition)), "XX", "0", .string(id)) }
        let lease = RepairLease(token: "test-owner", milliseconds: 600_000)
        #expect(try await gateway.redis.run(RepairLeaseCall(basketId: blocked, mode: .acquire, lease: lease)) == .acquired)
        let expired = try await gateway.service.expireDueHolds()
        #expect(expired == 1, "the free basket's hold expired past 600 kept ones")
        #expect(try await gateway.basket(other)["pending"]?.int == 0)
        #expect(try await gateway.redis.run(RepairLeaseCall(basketId: blocked, mode: .release, lease: lease)) == .released)
        // Released: they expire (looked at again within 5 s of being left).
        let released = Counter()
        #expect(
            try await eventually {
                released.add(try await gateway.service.expireDueHolds())
                return released.value >= 600
            })
        #expect(released.value == 600)
        await gateway.stop()
        server.stop()
    }
}
