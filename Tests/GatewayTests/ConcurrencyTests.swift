import Foundation
import GatewayCore
import RedisClient
import ReservationCore
import Testing
import TestSupport

/// The product's concurrency requirements, against a real Redis over real HTTP. Every scenario
/// runs 20 times with fresh baskets, so a race that shows once in 20 fails the suite.
@Suite("Gateway concurrency")
struct ConcurrencyTests {
    static let rounds = 20

    /// stock + pending + confirmed = capacity and stock >= 0, as the gateway reports it.
    static func checkInvariant(_ gateway: GatewayHarness, _ basketId: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> JSONValue {
        let basket = try await gateway.basket(basketId)
        let stock = basket["stock"]?.int ?? -1
        let pending = basket["pending"]?.int ?? -1
        let confirmed = basket["confirmed"]?.int ?? -1
        #expect(stock >= 0, sourceLocation: sourceLocation)
        #expect(stock + pending + confirmed == basket["capacity"]?.int, "\(basket)", sourceLocation: sourceLocation)
        return basket
    }

    @Test("10 concurrent reservations for stock 3: exactly 3 succeed, 7 sold out")
    func tenOnThree() async throws {
        let gateway = try await GatewayHarness.start()
        for _ in 0..<Self.rounds {
            let basketId = TestEnvironment.uniqueId("b")
            try await gateway.createBasket(basketId, stock: 3)
            let statuses = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for consumer in 0..<10 {
                    group.addTask {
                        let response = try await gateway.reserve(basketId, consumer: "c\(consumer)")
                        return (response.status, response.errorCode)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0.0 == 201 }.count == 3)
            #expect(statuses.filter { $0.0 == 409 && $0.1 == "sold_out" }.count == 7)
            let basket = try await Self.checkInvariant(gateway, basketId)
            #expect(basket["stock"]?.int == 0)
            #expect(basket["pending"]?.int == 3)
        }
        await gateway.stop()
    }

    @Test("500 concurrent HTTP reservations on stock 37: exactly 37 succeed")
    func fiveHundredOnThirtySeven() async throws {
        let gateway = try await GatewayHarness.start()
        for _ in 0..<Self.rounds {
            let basketId = TestEnvironment.uniqueId("b")
            try await gateway.createBasket(basketId, stock: 37)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for consumer in 0..<500 {
                    group.addTask { try await gateway.reserve(basketId, consumer: "c\(consumer)").status }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 201 }.count == 37)
            #expect(statuses.filter { $0 == 409 }.count == 463)
            let basket = try await Self.checkInvariant(gateway, basketId)
            #expect(basket["stock"]?.int == 0)
        }
        await gateway.stop()
    }

    @Test("concurrent cancel and reserve on stock 0: the reserve wins only after the cancel")
    func cancelRacesReserve() async throws {
        let gateway = try await GatewayHarness.start()
        var outcomes: Set<Int> = []
        for _ in 0..<Self.rounds {
            let basketId = TestEnvironment.uniqueId("b")
            try await gateway.createBasket(basketId, stock: 1)
            let first = try await gateway.reserve(basketId, consumer: "holder")
            let reservationId = try #require(first.json?["reservationId"]?.stringValue)
            async let cancel = gateway.request(.DELETE, "/v1/reservations/\(reservationId)")
            async let reserve = gateway.reserve(basketId, consumer: "newcomer")
            let (cancelled, reserved) = try await (cancel, reserve)
            #expect(cancelled.status == 200)
            #expect(reserved.status == 201 || reserved.errorCode == "sold_out")
            outcomes.insert(reserved.status)
            let basket = try await Self.checkInvariant(gateway, basketId)
            // The stream records the order the scripts ran in.
            let events = try await Self.events(gateway.redis, basketId)
            let cancelIndex = try #require(events.firstIndex { $0["type"] == "cancelled" })
            if reserved.status == 201 {
                let reserveIndex = try #require(events.lastIndex { $0["type"] == "reserved" && $0["consumer"] == "newcomer" })
                #expect(cancelIndex < reserveIndex)
                #expect(basket["stock"]?.int == 0)
            } else {
                #expect(!events.contains { $0["consumer"] == "newcomer" })
                #expect(basket["stock"]?.int == 1)
            }
        }
        await gateway.stop()
    }

    @Test("two concurrent deliveries of one webhook: one processed, one duplicate, one event")
    func duplicateWebhookPair() async throws {
        let gateway = try await GatewayHarness.start()
        for _ in 0..<Self.rounds {
            let (basketId, reservationId) = try await Self.pendingReservation(gateway)
            let eventId = TestEnvironment.uniqueId("evt")
            async let first = gateway.deliverPayment(eventId: eventId, reservationId: reservationId)
            async let second = gateway.deliverPayment(eventId: eventId, reservationId: reservationId)
            let answers = try await [first, second].map { $0.json?["status"]?.stringValue }
            #expect(answers.sorted { ($0 ?? "") < ($1 ?? "") } == ["duplicate", "processed"])
            let events = try await Self.events(gateway.redis, basketId, partitionOf: reservationId)
            #expect(events.filter { $0["type"] == "payment" && $0["event"] == eventId }.count == 1)
            let reservation = try await gateway.request(.GET, "/v1/reservations/\(reservationId)")
            #expect(reservation.json?["status"]?.stringValue == "confirmed")
            #expect(reservation.json?["paymentId"]?.stringValue == "pay-1")
            let basket = try await Self.checkInvariant(gateway, basketId)
            #expect(basket["confirmed"]?.int == 1)
            #expect(basket["pending"]?.int == 0)
        }
        await gateway.stop()
    }

    @Test("50 concurrent deliveries of one webhook over HTTP: exactly one processed")
    func fiftyDeliveries() async throws {
        let gateway = try await GatewayHarness.start()
        for _ in 0..<Self.rounds {
            let (basketId, reservationId) = try await Self.pendingReservation(gateway)
            let eventId = TestEnvironment.uniqueId("evt")
            let answers = try await withThrowingTaskGroup(of: TestHTTPResponse.self) { group in
                for _ in 0..<50 { group.addTask { try await gateway.deliverPayment(eventId: eventId, reservationId: reservationId) } }
                return try await group.reduce(into: [TestHTTPResponse]()) { $0.append($1) }
            }
            #expect(answers.allSatisfy { $0.status == 200 })
            #expect(answers.filter { $0.json?["status"]?.stringValue == "processed" }.count == 1)
            #expect(answers.filter { $0.json?["status"]?.stringValue == "duplicate" }.count == 49)
            #expect(answers.first { $0.json?["status"]?.stringValue == "processed" }?.json?["outcome"]?.stringValue == "confirmed")
            let events = try await Self.events(gateway.redis, basketId, partitionOf: reservationId)
            #expect(events.filter { $0["type"] == "payment" && $0["event"] == eventId }.count == 1)
            _ = try await Self.checkInvariant(gateway, basketId)
        }
        await gateway.stop()
    }

    @Test("one consumer, 10 concurrent reservations, maxPerConsumer 2: exactly 2 granted")
    func perConsumerLimit() async throws {
        let gateway = try await GatewayHarness.start()
        for _ in 0..<Self.rounds {
            let basketId = TestEnvironment.uniqueId("b")
            try await gateway.createBasket(basketId, stock: 10, maxPerConsumer: 2)
            let responses = try await withThrowingTaskGroup(of: TestHTTPResponse.self) { group in
                for _ in 0..<10 { group.addTask { try await gateway.reserve(basketId, consumer: "greedy") } }
                return try await group.reduce(into: [TestHTTPResponse]()) { $0.append($1) }
            }
            #expect(responses.filter { $0.status == 201 }.count == 2)
            #expect(responses.filter { $0.errorCode == "limit_exceeded" }.count == 8)
            let basket = try await Self.checkInvariant(gateway, basketId)
            #expect(basket["pending"]?.int == 2)
            #expect(basket["stock"]?.int == 8)
        }
        await gateway.stop()
    }

    @Test("one Idempotency-Key sent 10 times at once: one reservation, ten identical answers")
    func idempotencyKeyConcurrent() async throws {
        let gateway = try await GatewayHarness.start()
        for _ in 0..<Self.rounds {
            let basketId = TestEnvironment.uniqueId("b")
            try await gateway.createBasket(basketId, stock: 5)
            let key = TestEnvironment.uniqueId("idem")
            let responses = try await withThrowingTaskGroup(of: TestHTTPResponse.self) { group in
                for _ in 0..<10 { group.addTask { try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: key) } }
                return try await group.reduce(into: [TestHTTPResponse]()) { $0.append($1) }
            }
            #expect(responses.allSatisfy { $0.status == 201 })
            #expect(Set(responses.map(\.body)).count == 1, "every answer is byte for byte the first")
            let basket = try await Self.checkInvariant(gateway, basketId)
            #expect(basket["pending"]?.int == 1)
            #expect(basket["stock"]?.int == 4)
            let reused = try await gateway.reserve(basketId, consumer: "c1", quantity: 2, idempotencyKey: key)
            #expect(reused.status == 422)
            #expect(reused.errorCode == "idempotency_key_reused")
            let other = try await gateway.reserve(basketId, consumer: "c2", idempotencyKey: key)
            #expect(other.status == 422)
        }
        await gateway.stop()
    }

    @Test("an idempotent refusal is replayed too, even after stock comes back")
    func idempotentRefusalReplayed() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("b")
        try await gateway.createBasket(basketId, stock: 0)
        let first = try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "k-1")
        #expect(first.errorCode == "sold_out")
        _ = try await gateway.request(.POST, "/v1/baskets/\(basketId)/stock-adjustments", headers: gateway.admin, body: HTTPTestClient.json(["delta": 5]))
        let again = try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "k-1")
        #expect(again.status == 409)
        #expect(again.body == first.body)
        #expect(try await gateway.basket(basketId)["stock"]?.int == 5)
        await gateway.stop()
    }

    @Test("a 1-second hold expires by itself, its unit sells again, and a late payment is refund_required")
    func holdExpiry() async throws {
        let gateway = try await GatewayHarness.start()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<Self.rounds {
                group.addTask {
                    let basketId = TestEnvironment.uniqueId("b")
                    try await gateway.createBasket(basketId, stock: 1, holdSeconds: 1)
                    let first = try await gateway.reserve(basketId, consumer: "slow")
                    let reservationId = try #require(first.json?["reservationId"]?.stringValue)
                    #expect(try await gateway.reserve(basketId, consumer: "other").errorCode == "sold_out")
                    let expired = try await eventually(timeout: .seconds(10)) {
                        try await gateway.request(.GET, "/v1/reservations/\(reservationId)").json?["status"]?.stringValue == "expired"
                    }
                    #expect(expired)
                    #expect(try await gateway.basket(basketId)["stock"]?.int == 1)
                    let late = try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: reservationId)
                    #expect(late.json?["outcome"]?.stringValue == "refund_required")
                    let basket = try await Self.checkInvariant(gateway, basketId)
                    #expect(basket["stock"]?.int == 1)
                    #expect(basket["confirmed"]?.int == 0)
                    let again = try await gateway.reserve(basketId, consumer: "other")
                    #expect(again.status == 201)
                    #expect(try await gateway.request(.DELETE, "/v1/reservations/\(reservationId)").errorCode == "reservation_expired")
                }
            }
            try await group.waitForAll()
        }
        await gateway.stop()
    }

    @Test("two concurrent cancels give the units back once")
    func doubleCancel() async throws {
        let gateway = try await GatewayHarness.start()
        for _ in 0..<Self.rounds {
            let basketId = TestEnvironment.uniqueId("b")
            try await gateway.createBasket(basketId, stock: 3, maxPerConsumer: 2)
            let reserved = try await gateway.reserve(basketId, consumer: "c1", quantity: 2)
            let reservationId = try #require(reserved.json?["reservationId"]?.stringValue)
            async let first = gateway.request(.DELETE, "/v1/reservations/\(reservationId)")
            async let second = gateway.request(.DELETE, "/v1/reservations/\(reservationId)")
            let (a, b) = try await (first, second)
            #expect(a.status == 200 && b.status == 200)
            #expect(a.body == b.body)
            #expect(a.json?["status"]?.stringValue == "cancelled")
            let basket = try await Self.checkInvariant(gateway, basketId)
            #expect(basket["stock"]?.int == 3)
            #expect(basket["capacity"]?.int == 3)
            let events = try await Self.events(gateway.redis, basketId)
            #expect(events.filter { $0["type"] == "cancelled" }.count == 1)
        }
        await gateway.stop()
    }

    @Test("cancelling a confirmed reservation gives its units back once")
    func cancelConfirmed() async throws {
        let gateway = try await GatewayHarness.start()
        let (basketId, reservationId) = try await Self.pendingReservation(gateway)
        _ = try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: reservationId)
        #expect(try await gateway.basket(basketId)["confirmed"]?.int == 1)
        let cancelled = try await gateway.request(.DELETE, "/v1/reservations/\(reservationId)")
        #expect(cancelled.json?["status"]?.stringValue == "cancelled")
        #expect(cancelled.json?["paymentId"]?.stringValue == "pay-1")
        let basket = try await Self.checkInvariant(gateway, basketId)
        #expect(basket["stock"]?.int == 1)
        #expect(basket["confirmed"]?.int == 0)
        await gateway.stop()
    }

    @Test("two gateways expiring the same holds at once give every unit back exactly once")
    func expiryByTwoGateways() async throws {
        let first = try await GatewayHarness.start()
        let second = try await GatewayHarness.start()
        for _ in 0..<3 {
            let basketId = TestEnvironment.uniqueId("b")
            try await first.createBasket(basketId, stock: 50, holdSeconds: 1)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for consumer in 0..<50 {
                    group.addTask {
                        let gateway = consumer % 2 == 0 ? first : second
                        guard try await gateway.reserve(basketId, consumer: "c\(consumer)").status == 201 else { throw HarnessError("not granted") }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await eventually(timeout: .seconds(15)) { try await first.basket(basketId)["pending"]?.int == 0 })
            let basket = try await Self.checkInvariant(first, basketId)
            #expect(basket["stock"]?.int == 50)
            #expect(basket["capacity"]?.int == 50)
            let events = try await Self.events(first.redis, basketId)
            #expect(events.filter { $0["type"] == "expired" }.count == 50)
        }
        await first.stop()
        await second.stop()
    }

    @Test("the sold-out flag only refuses: a cancel clears it at once")
    func soldOutFlagClearedByCancel() async throws {
        let gateway = try await GatewayHarness.start { $0.soldOutCacheMilliseconds = 10_000 }
        for _ in 0..<Self.rounds {
            let basketId = TestEnvironment.uniqueId("b")
            try await gateway.createBasket(basketId, stock: 1)
            let holder = try await gateway.reserve(basketId, consumer: "holder")
            let reservationId = try #require(holder.json?["reservationId"]?.stringValue)
            #expect(try await gateway.reserve(basketId, consumer: "waiting").errorCode == "sold_out")
            #expect(try await gateway.reserve(basketId, consumer: "waiting").errorCode == "sold_out")
            #expect(try await gateway.request(.DELETE, "/v1/reservations/\(reservationId)").status == 200)
            #expect(try await gateway.reserve(basketId, consumer: "waiting").status == 201, "the unit given back sells at once")
            _ = try await Self.checkInvariant(gateway, basketId)
        }
        await gateway.stop()
    }

    // MARK: helpers

    static func pendingReservation(_ gateway: GatewayHarness) async throws -> (String, String) {
        let basketId = TestEnvironment.uniqueId("b")
        try await gateway.createBasket(basketId, stock: 1)
        let response = try await gateway.reserve(basketId, consumer: "buyer")
        guard let reservationId = response.json?["reservationId"]?.stringValue else {
            throw HarnessError("reserve answered \(response.status) \(response.text)")
        }
        return (basketId, reservationId)
    }

    /// This basket's events, in stream order, as field dictionaries.
    static func events(_ redis: RedisClient, _ basketId: String, partitionOf reservationId: String? = nil) async throws -> [[String: String]] {
        let partition = Keyspace.partition(ofBasket: basketId)
        // Only the last two minutes: the shared test stream is never trimmed during a run.
        let since = Int(Date().timeIntervalSince1970 * 1000) - 120_000
        let reply = try await redis.send("XRANGE", .string(Keyspace.stream(partition)), .string("\(since)-0"), "+")
        var events: [[String: String]] = []
        for entry in reply.array ?? [] {
            guard let parts = entry.array, parts.count == 2, let fields = parts[1].array else { continue }
            var event: [String: String] = [:]
            var index = 0
            while index + 1 < fields.count {
                event[fields[index].string ?? ""] = fields[index + 1].string
                index += 2
            }
            if event["basket"] == basketId { events.append(event) }
        }
        return events
    }
}
