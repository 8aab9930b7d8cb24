import Foundation
import GatewayCore
import NIOHTTP1
import RedisClient
import ReservationCore
import Synchronization
import TestSupport
import Testing

/// How long Idempotency-Key records live, and what keyed attempts on a sold-out basket cost
/// Redis: a grant is replayed for a day, a refusal that changed nothing only for
/// `IDEMPOTENCY_REFUSAL_SECONDS`, and bots that put a fresh key on every attempt cannot fill Redis.
@Suite("Idempotency-Key retention")
struct IdempotencyRetentionTests {
    static func idempotencyRecord(_ basketId: String, _ consumerId: String, _ key: String) -> String {
        Keyspace.idempotency(basketId: basketId, consumerId: consumerId, key: key, partition: Keyspace.partition(ofBasket: basketId))
    }

    @Test("a refusal stored under a key is replayed for IDEMPOTENCY_REFUSAL_SECONDS, then gone; a grant is kept for 24 h")
    func refusalsExpireGrantsStay() async throws {
        let gateway = try await GatewayHarness.start {
            $0.idempotencyRefusalSeconds = 30
            // The refusal must reach the script (and be stored), not the sold-out memory.
            $0.soldOutCacheMilliseconds = 0
        }
        let basketId = TestEnvironment.uniqueId("idr")
        try await gateway.createBasket(basketId, stock: 1)
        let grant = try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "k-grant")
        #expect(grant.status == 201)
        let refusal = try await gateway.reserve(basketId, consumer: "c2", idempotencyKey: "k-refused")
        #expect(refusal.errorCode == "sold_out")
        let refusedRecord = Self.idempotencyRecord(basketId, "c2", "k-refused")
        let grantTTL = try await gateway.redis.send("TTL", .string(Self.idempotencyRecord(basketId, "c1", "k-grant"))).int ?? -2
        let refusalTTL = try await gateway.redis.send("TTL", .string(refusedRecord)).int ?? -2
        #expect(grantTTL > 86_000, "a grant is kept a day: \(grantTTL)")
        #expect(refusalTTL > 0 && refusalTTL <= 30, "a refusal only for the refusal window: \(refusalTTL)")
        // Within the window the refusal is replayed, even once a unit is back.
        #expect(
            try await gateway.request(
                .POST, "/v1/baskets/\(basketId)/stock-adjustments", headers: gateway.admin, body: Array(#"{"delta":1}"#.utf8)
            ).status == 200)
        let replayed = try await gateway.reserve(basketId, consumer: "c2", idempotencyKey: "k-refused")
        #expect(replayed.errorCode == "sold_out", "the first answer again: \(replayed.text)")
        // The window ends (made to end now rather than waited for): the same key is a new request.
        _ = try await gateway.redis.send("PEXPIRE", .string(refusedRecord), "1")
        #expect(try await eventually { try await gateway.redis.send("EXISTS", .string(refusedRecord)).int == 0 })
        let retried = try await gateway.reserve(basketId, consumer: "c2", idempotencyKey: "k-refused")
        #expect(retried.status == 201, "after the window the key is free: \(retried.text)")
        // The grant is still replayed, the same reservation.
        let grantAgain = try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "k-grant")
        #expect(grantAgain.status == 201)
        #expect(grantAgain.json?["reservationId"]?.stringValue == grant.json?["reservationId"]?.stringValue)
        #expect(try await gateway.basket(basketId)["pending"]?.int == 2)
        await gateway.stop()
    }

    @Test(
        "on a basket known sold out, a keyed grant is still replayed, another body is 422, and a new key's sold_out is stored and replayed, all without the reserve script"
    )
    func soldOutMemoryKeepsReplays() async throws {
        // A Redis of its own (its command counts are this test's), and a long memory, so every
        // attempt after the first refusal meets it.
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        let gateway = try await GatewayHarness.start(redisURL: server.url, expiryLoop: false) { $0.soldOutCacheMilliseconds = 600_000 }
        let basketId = TestEnvironment.uniqueId("ids")
        try await gateway.createBasket(basketId, stock: 1, maxPerConsumer: 2)
        let grant = try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "mine")
        #expect(grant.status == 201)
        // The refusal that teaches the gateway the basket is sold out.
        #expect(try await gateway.reserve(basketId, consumer: "c2").errorCode == "sold_out")
        let counted = try await Self.commandCalls(gateway.redis, "hincrby")
        let replay = try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "mine")
        #expect(replay.status == 201)
        #expect(replay.json?["reservationId"]?.stringValue == grant.json?["reservationId"]?.stringValue)
        #expect(try await gateway.reserve(basketId, consumer: "c1", quantity: 2, idempotencyKey: "mine").errorCode == "idempotency_key_reused")
        #expect(try await gateway.reserve(basketId, consumer: "c3", idempotencyKey: "fresh").errorCode == "sold_out")
        let ttl = try await gateway.redis.send("TTL", .string(Self.idempotencyRecord(basketId, "c3", "fresh"))).int ?? -2
        #expect(ttl > 0 && ttl <= gateway.configuration.idempotencyRefusalSeconds, "stored for the refusal window: \(ttl)")
        #expect(try await Self.commandCalls(gateway.redis, "hincrby") == counted, "no reservation was attempted (no consumer count)")
        // A unit comes back (the memory ends): the stored refusal is still the answer to its key,
        // and a new key reserves.
        #expect(
            try await gateway.request(
                .POST, "/v1/baskets/\(basketId)/stock-adjustments", headers: gateway.admin, body: Array(#"{"delta":1}"#.utf8)
            ).status == 200)
        #expect(try await gateway.reserve(basketId, consumer: "c3", idempotencyKey: "fresh").errorCode == "sold_out")
        #expect(try await gateway.reserve(basketId, consumer: "c4", idempotencyKey: "new").status == 201)
        await gateway.stop()
        server.stop()
    }

    /// Calls of one command the server has run (its own Redis: nothing else counts).
    static func commandCalls(_ redis: RedisClient, _ command: String) async throws -> Int {
        let info = try await redis.send("INFO", "commandstats").string ?? ""
        let line = info.split(separator: "\r\n").first { $0.hasPrefix("cmdstat_\(command):") } ?? ""
        let calls = line.split(separator: ",").first?.split(separator: "=").last.flatMap { Int($0) }
        return calls ?? 0
    }

    @Test("100,000 keyed attempts with fresh keys on a sold-out basket leave Redis only the refusal window's worth of records, then none")
    func freshKeysOnSoldOut() async throws {
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        // A short refusal window, so the test sees it end.
        let gateway = try await GatewayHarness.start(redisURL: server.url, expiryLoop: false) { $0.idempotencyRefusalSeconds = 5 }
        let basketId = TestEnvironment.uniqueId("idf")
        try await gateway.createBasket(basketId, stock: 0)
        let memoryBefore = try await Self.usedMemory(gateway.redis)
        let started = ContinuousClock.now
        // 16 keep-alive connections, each pipelining its share of 100,000 attempts in chunks.
        let attempts = 100_000
        let connections = 16
        let perConnection = attempts / connections
        let statuses = try await withThrowingTaskGroup(of: [Int: Int].self) { group in
            for client in 0..<connections {
                group.addTask {
                    let connection = try await RawConnection.open(port: gateway.port)
                    var counted: [Int: Int] = [:]
                    var sent = 0
                    while sent < perConnection {
                        let chunk = min(200, perConnection - sent)
                        var text = ""
                        for index in sent..<sent + chunk {
                            let body = #"{"consumerId":"bot-\#(client)-\#(index)"}"#
                            text += "POST /v1/baskets/\(basketId)/reservations HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k-\(client)-\(index)\r\n"
                            text += "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
                        }
                        await connection.send(text)
                        let responses = try await connection.responses(count: chunk)
                        guard responses.count == chunk else { throw HarnessError("connection closed after \(responses.count) answers") }
                        for response in responses { counted[response.status, default: 0] += 1 }
                        connection.dropReceived()
                        sent += chunk
                    }
                    await connection.close()
                    return counted
                }
            }
            return try await group.reduce(into: [Int: Int]()) { total, part in total.merge(part, uniquingKeysWith: +) }
        }
        let elapsed = ContinuousClock.now - started
        #expect(statuses == [409: perConnection * connections], "\(statuses)")
        // Each refusal is kept for the refusal window only: what Redis holds is the window's
        // worth of attempts, and once it has passed, nothing.
        // every consumer's records on this basket
        let prefix = String(Self.idempotencyRecord(basketId, "", "").dropLast())
        func records() async throws -> [String] {
            var cursor = "0"
            var found: [String] = []
            repeat {
                let reply = try await gateway.redis.send("SCAN", .string(cursor), "MATCH", .string(prefix + "*"), "COUNT", "1000").array ?? []
                cursor = reply.first?.string ?? "0"
                found += reply.last?.array?.compactMap(\.string) ?? []
            } while cursor != "0"
            return found
        }
        let held = try await records()
        #expect(held.count <= attempts)
        for record in held.prefix(50) {
            let ttl = try await gateway.redis.send("TTL", .string(record)).int ?? -2
            #expect(ttl <= gateway.configuration.idempotencyRefusalSeconds, "\(record): TTL \(ttl)")
        }
        let peakMemory = try await Self.usedMemory(gateway.redis)
        #expect(try await eventually { try await records().isEmpty }, "gone after the refusal window")
        let memoryAfter = try await Self.usedMemory(gateway.redis)
        print(
            "fresh keys on sold out: \(attempts) attempts in \(elapsed), \(held.count) records held at the end, used_memory \(memoryBefore) -> \(peakMemory) -> \(memoryAfter) after the window"
        )
        await gateway.stop()
        server.stop()
    }

    static func usedMemory(_ redis: RedisClient) async throws -> Int {
        let info = try await redis.send("INFO", "memory").string ?? ""
        let line = info.split(separator: "\r\n").first { $0.hasPrefix("used_memory:") } ?? ""
        return Int(line.split(separator: ":").last ?? "") ?? 0
    }
}
