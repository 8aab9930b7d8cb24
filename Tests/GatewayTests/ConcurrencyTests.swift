import Foundation
import GatewayCore
import NIOHTTP1
import RedisClient
import ReservationCore
import TestSupport
import Testing

/// The product's concurrency requirements, against a real Redis over real HTTP. Every scenario
/// runs 20 times with fresh baskets, so a race that shows once in 20 fails the suite.
@Suite("Gateway concurrency")
struct ConcurrencyTests {
    static let rounds = 20

    /// stock + pending + confirmed = capacity and stock >= 0, as the gateway reports it.
    static func checkInvariant(_ gateway: GatewayHarness, _ basketId: String, sourceLocation: SourceLocation = #_sourceLocation) async throws
        -> JSONValue
    {
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

    @Test("cancel against reserve: in either order a unit is sold only after it came back; many against many keep the books")
    func cancelRacesReserve() async throws {
        // No sold-out memory: every attempt is decided by the script, in Redis's order.
        let gateway = try await GatewayHarness.start { $0.soldOutCacheMilliseconds = 0 }
        // Both orders, forced.
        let basketId = TestEnvironment.uniqueId("b")
        try await gateway.createBasket(basketId, stock: 1)
        let held = try #require(try await gateway.reserve(basketId, consumer: "holder").json?["reservationId"]?.stringValue)
        #expect(try await gateway.reserve(basketId, consumer: "early").errorCode == "sold_out", "reserve before the cancel")
        #expect(try await gateway.request(.DELETE, "/v1/reservations/\(held)").status == 200)
        #expect(try await gateway.reserve(basketId, consumer: "late").status == 201, "reserve after the cancel")
        _ = try await Self.checkInvariant(gateway, basketId)

        // Many against many: 20 cancels and 40 reserves at once on 20 held units.
        for _ in 0..<Self.rounds {
            let basketId = TestEnvironment.uniqueId("b")
            try await gateway.createBasket(basketId, stock: 20, maxPerConsumer: 1)
            var holds: [String] = []
            for index in 0..<20 {
                holds.append(try #require(try await gateway.reserve(basketId, consumer: "h\(index)").json?["reservationId"]?.stringValue))
            }
            let answers = try await withThrowingTaskGroup(of: (String, Int, String?).self) { group in
                for id in holds {
                    group.addTask { ("cancel", try await gateway.request(.DELETE, "/v1/reservations/\(id)").status, nil) }
                }
                for index in 0..<40 {
                    group.addTask {
                        let answer = try await gateway.reserve(basketId, consumer: "n\(index)")
                        return ("n\(index)", answer.status, answer.errorCode)
                    }
                }
                return try await group.reduce(into: [(String, Int, String?)]()) { $0.append($1) }
            }
            let cancels = answers.filter { $0.0 == "cancel" }
            let reserves = answers.filter { $0.0 != "cancel" }
            #expect(cancels.count == 20 && cancels.allSatisfy { $0.1 == 200 })
            #expect(reserves.allSatisfy { $0.1 == 201 || $0.2 == "sold_out" }, "\(reserves.filter { $0.1 != 201 && $0.2 != "sold_out" })")
            let granted = Set(reserves.filter { $0.1 == 201 }.map(\.0))
            #expect(granted.count <= 20 && reserves.count - granted.count >= 20, "never more than the units given back")
            // The stream records the order the scripts ran in: walked in that order, no reserve
            // of a newcomer ever took a unit that had not come back yet.
            var free = 0
            var reservedInStream: Set<String> = []
            for event in try await Self.events(gateway, basketId) {
                if event["type"] == "cancelled" { free += 1 }
                if event["type"] == "reserved", let consumer = event["consumer"], consumer.hasPrefix("n") {
                    free -= 1
                    reservedInStream.insert(consumer)
                    #expect(free >= 0, "a unit sold before it came back")
                }
            }
            #expect(free == 20 - granted.count)
            #expect(reservedInStream == granted, "every 201, and only those, reserved a unit")
            let basket = try await Self.checkInvariant(gateway, basketId)
            #expect(basket["stock"]?.int == 20 - granted.count)
            #expect(basket["pending"]?.int == granted.count)
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
            let events = try await Self.events(gateway, basketId)
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
            let events = try await Self.events(gateway, basketId)
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
            // The key belongs to its consumer: another consumer's same key is another request.
            let other = try await gateway.reserve(basketId, consumer: "c2", idempotencyKey: key)
            #expect(other.status == 201)
            #expect(other.json?["reservationId"] != responses.first?.json?["reservationId"], "never the first consumer's reservation")
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
        _ = try await gateway.request(
            .POST, "/v1/baskets/\(basketId)/stock-adjustments", headers: gateway.admin, body: HTTPTestClient.json(["delta": 5]))
        let again = try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "k-1")
        #expect(again.status == 409)
        #expect(again.body == first.body)
        #expect(try await gateway.basket(basketId)["stock"]?.int == 5)
        await gateway.stop()
    }

    @Test("a due hold expires with no request, its unit sells again, and a late payment is refund_required")
    func holdExpiry() async throws {
        let gateway = try await GatewayHarness.start()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<Self.rounds {
                group.addTask {
                    // A 10-minute hold, made due on demand: every step below happens on its own side of
                    // the deadline however slow the machine is.
                    let basketId = TestEnvironment.uniqueId("b")
                    try await gateway.createBasket(basketId, stock: 1, holdSeconds: 600)
                    let first = try await gateway.reserve(basketId, consumer: "slow")
                    let reservationId = try #require(first.json?["reservationId"]?.stringValue)
                    #expect(try await gateway.reserve(basketId, consumer: "other").errorCode == "sold_out")
                    try await gateway.makeHoldDue(reservationId)
                    try await Self.expectExpiredAndResold(gateway, basketId: basketId, reservationId: reservationId)
                }
            }
            try await group.waitForAll()
        }
        await gateway.stop()
    }

    @Test("a real 1-second hold runs out by itself (assertions hold on either side of its deadline)")
    func shortHoldRunsOut() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("b")
        try await gateway.createBasket(basketId, stock: 1, holdSeconds: 1)
        let first = try await gateway.reserve(basketId, consumer: "slow")
        let reservationId = try #require(first.json?["reservationId"]?.stringValue)
        let expiresAt = try #require(first.json?["expiresAt"]?.stringValue.flatMap { ISO8601DateFormatter.withFractionalSeconds.date(from: $0) })
        let other = try await gateway.reserve(basketId, consumer: "other")
        let answeredAt = Date()
        if answeredAt < expiresAt {
            // Answered before the hold ran out, so the script ran before it too: the unit was held.
            #expect(other.errorCode == "sold_out")
        } else {
            // A slow machine: the hold may have run out first, and then "other" may hold the unit.
            #expect(other.status == 201 || other.errorCode == "sold_out")
        }
        let expired = try await eventually(interval: .milliseconds(100)) {
            try await gateway.request(.GET, "/v1/reservations/\(reservationId)").json?["status"]?.stringValue == "expired"
        }
        #expect(expired)
        if let otherId = other.json?["reservationId"]?.stringValue {
            #expect(
                try await eventually(interval: .milliseconds(100)) {
                    try await gateway.request(.GET, "/v1/reservations/\(otherId)").json?["status"]?.stringValue == "expired"
                })
        }
        #expect(try await eventually { try await gateway.basket(basketId)["stock"]?.int == 1 })
        _ = try await Self.checkInvariant(gateway, basketId)
        #expect(try await gateway.request(.DELETE, "/v1/reservations/\(reservationId)").errorCode == "reservation_expired")
        await gateway.stop()
    }

    /// After `reservationId`'s hold became due: the expiry loop expires it (no request needed),
    /// its unit is back, a late payment is refund_required, the unit sells again, and a cancel of
    /// the expired reservation is refused.
    static func expectExpiredAndResold(_ gateway: GatewayHarness, basketId: String, reservationId: String) async throws {
        let expired = try await eventually(interval: .milliseconds(100)) {
            try await gateway.request(.GET, "/v1/reservations/\(reservationId)").json?["status"]?.stringValue == "expired"
        }
        #expect(expired)
        #expect(try await gateway.basket(basketId)["stock"]?.int == 1)
        let late = try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: reservationId)
        #expect(late.json?["outcome"]?.stringValue == "refund_required")
        let basket = try await checkInvariant(gateway, basketId)
        #expect(basket["stock"]?.int == 1)
        #expect(basket["confirmed"]?.int == 0)
        let again = try await gateway.reserve(basketId, consumer: "other")
        #expect(again.status == 201)
        #expect(try await gateway.request(.DELETE, "/v1/reservations/\(reservationId)").errorCode == "reservation_expired")
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
            let events = try await Self.events(gateway, basketId)
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
            try await first.createBasket(basketId, stock: 50, holdSeconds: 600)
            try await withThrowingTaskGroup(of: String.self) { group in
                for consumer in 0..<50 {
                    group.addTask {
                        let gateway = consumer % 2 == 0 ? first : second
                        let reserved = try await gateway.reserve(basketId, consumer: "c\(consumer)")
                        guard let id = reserved.json?["reservationId"]?.stringValue else { throw HarnessError("not granted") }
                        return id
                    }
                }
                let ids = try await group.reduce(into: [String]()) { $0.append($1) }
                // Every hold falls due at once, while both gateways' expiry loops run.
                for id in ids { try await first.makeHoldDue(id) }
            }
            #expect(try await eventually(interval: .milliseconds(100)) { try await first.basket(basketId)["pending"]?.int == 0 })
            let basket = try await Self.checkInvariant(first, basketId)
            #expect(basket["stock"]?.int == 50)
            #expect(basket["capacity"]?.int == 50)
            let events = try await Self.events(first, basketId)
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

    @Test("the sold-out memory refuses by quantity: after 2 units are refused, the last unit still sells")
    func soldOutFlagByQuantity() async throws {
        let gateway = try await GatewayHarness.start { $0.soldOutCacheMilliseconds = 10_000 }
        for _ in 0..<Self.rounds {
            let basketId = TestEnvironment.uniqueId("b")
            try await gateway.createBasket(basketId, stock: 1, maxPerConsumer: 5)
            for _ in 0..<3 {
                #expect(try await gateway.reserve(basketId, consumer: "greedy", quantity: 2).errorCode == "sold_out")
            }
            #expect(try await gateway.reserve(basketId, consumer: "modest", quantity: 1).status == 201, "one unit was left")
            #expect(try await gateway.reserve(basketId, consumer: "late", quantity: 1).errorCode == "sold_out")
            _ = try await Self.checkInvariant(gateway, basketId)
        }
        await gateway.stop()
    }

    @Test("units another gateway gives back sell here once the sold-out memory runs out, while a crowd is refused")
    func soldOutMemoryRunsOutUnderLoad() async throws {
        // The memory's run-out sends one request to Redis and refuses the rest meanwhile: the
        // crowd below keeps it refreshing, and the units cancelled through the other gateway (which
        // this one never hears of) must still sell here, both of them: the request that finds them
        // ends the memory. Nothing waits on a clock: the loop polls.
        let here = try await GatewayHarness.start { $0.soldOutCacheMilliseconds = 100 }
        let other = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("b")
        try await here.createBasket(basketId, stock: 2, maxPerConsumer: 2)
        let holder = try await other.reserve(basketId, consumer: "holder", quantity: 2)
        let reservationId = try #require(holder.json?["reservationId"]?.stringValue)
        #expect(try await here.reserve(basketId, consumer: "early").errorCode == "sold_out")
        let refusedWhileHeld = try await withThrowingTaskGroup(of: Int.self) { group in
            for client in 0..<8 {
                group.addTask {
                    var refused = 0
                    for attempt in 0..<25 where try await here.reserve(basketId, consumer: "crowd-\(client)-\(attempt)").errorCode == "sold_out" {
                        refused += 1
                    }
                    return refused
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(refusedWhileHeld == 200, "nothing sells while every unit is held")
        #expect(try await other.request(.DELETE, "/v1/reservations/\(reservationId)").status == 200)
        var sold = false
        for attempt in 0..<3_000 where !sold {
            let response = try await here.reserve(basketId, consumer: "after-\(attempt)")
            if response.status == 201 {
                sold = true
            } else {
                #expect(response.errorCode == "sold_out")
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        #expect(sold, "a unit given back through another gateway sells here")
        // The request that found units ended the memory: the second unit sells at once.
        #expect(try await here.reserve(basketId, consumer: "second").status == 201)
        _ = try await Self.checkInvariant(here, basketId)
        await here.stop()
        await other.stop()
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
    static func events(_ gateway: GatewayHarness, _ basketId: String) async throws -> [[String: String]] {
        try await events(gateway, ofBaskets: [basketId])
    }

    /// The events of these baskets (of one partition), in stream order, as field dictionaries.
    static func events(_ gateway: GatewayHarness, ofBaskets baskets: Set<String>) async throws -> [[String: String]] {
        guard let partition = baskets.first.map(Keyspace.partition(ofBasket:)) else { return [] }
        // Only what was written since this gateway started (the shared test stream is never trimmed during a run);
        // a minute of slack for clocks, none for how long the run takes.
        let since = gateway.startedMilliseconds - 60_000
        let reply = try await gateway.redis.send("XRANGE", .string(Keyspace.stream(partition)), .string("\(since)-0"), "+")
        var events: [[String: String]] = []
        for entry in reply.array ?? [] {
            guard let parts = entry.array, parts.count == 2, let fields = parts[1].array else { continue }
            var event: [String: String] = [:]
            var index = 0
            while index + 1 < fields.count {
                event[fields[index].string ?? ""] = fields[index + 1].string
                index += 2
            }
            if let basket = event["basket"], baskets.contains(basket) { events.append(event) }
        }
        return events
    }
}
