import Foundation
import GatewayCore
import NIOHTTP1
import ReservationCore
import TestSupport
import Testing

/// Every error code of the contract, over HTTP, with its status and JSON shape.
@Suite("Gateway error answers")
struct ContractErrorTests {
    static func expectError(
        _ response: TestHTTPResponse, _ status: Int, _ code: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(response.status == status, "\(response.text)", sourceLocation: sourceLocation)
        #expect(response.errorCode == code, "\(response.text)", sourceLocation: sourceLocation)
        #expect((response.json?["message"]?.stringValue?.isEmpty ?? true) == false, sourceLocation: sourceLocation)
        #expect(response.headers.first(name: "content-type") == "application/json", sourceLocation: sourceLocation)
    }

    @Test("admin endpoints: 401 without or with a wrong token, 409 basket_exists, 409 insufficient_stock, 404")
    func adminErrors() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("b")
        let body = HTTPTestClient.json(["stock": 2])
        Self.expectError(try await gateway.request(.PUT, "/v1/baskets/\(basketId)", body: body), 401, "unauthorized")
        Self.expectError(
            try await gateway.request(.PUT, "/v1/baskets/\(basketId)", headers: [("Authorization", "Bearer wrong")], body: body), 401, "unauthorized")
        Self.expectError(
            try await gateway.request(.PUT, "/v1/baskets/\(basketId)", headers: [("Authorization", GatewayHarness.adminToken)], body: body), 401,
            "unauthorized")
        let created = try await gateway.request(.PUT, "/v1/baskets/\(basketId)", headers: gateway.admin, body: body)
        #expect(created.status == 201)
        #expect(
            created.json
                == .object([
                    "basketId": .string(basketId), "stock": .integer(2), "pending": .integer(0), "confirmed": .integer(0),
                    "capacity": .integer(2), "holdSeconds": .integer(600), "maxPerConsumer": .integer(1), "opensAt": .null,
                    "closesAt": .null, "paused": .bool(false), "waitingRoom": .null, "state": .string("open"),
                ]))
        Self.expectError(try await gateway.request(.PUT, "/v1/baskets/\(basketId)", headers: gateway.admin, body: body), 409, "basket_exists")
        let adjust = "/v1/baskets/\(basketId)/stock-adjustments"
        Self.expectError(try await gateway.request(.POST, adjust, body: HTTPTestClient.json(["delta": 1])), 401, "unauthorized")
        Self.expectError(
            try await gateway.request(.POST, adjust, headers: gateway.admin, body: HTTPTestClient.json(["delta": -3])), 409, "insufficient_stock")
        Self.expectError(
            try await gateway.request(.POST, adjust, headers: gateway.admin, body: HTTPTestClient.json(["delta": 0])), 400, "invalid_request")
        let added = try await gateway.request(.POST, adjust, headers: gateway.admin, body: HTTPTestClient.json(["delta": 3]))
        #expect(added.json?["stock"]?.int == 5)
        #expect(added.json?["capacity"]?.int == 5)
        let removed = try await gateway.request(.POST, adjust, headers: gateway.admin, body: HTTPTestClient.json(["delta": -5]))
        #expect(removed.json?["stock"]?.int == 0)
        Self.expectError(
            try await gateway.request(
                .POST, "/v1/baskets/\(basketId)-x/stock-adjustments", headers: gateway.admin, body: HTTPTestClient.json(["delta": 1])), 404,
            "basket_not_found")
        Self.expectError(try await gateway.request(.GET, "/v1/baskets/\(basketId)-x"), 404, "basket_not_found")
        // Capacity is bounded (so no counter, here or in Postgres, can overflow): 409 past it.
        let full = try await gateway.request(.POST, adjust, headers: gateway.admin, body: HTTPTestClient.json(["delta": 1_000_000_000]))
        #expect(full.json?["capacity"]?.int == 1_000_000_000)
        Self.expectError(
            try await gateway.request(.POST, adjust, headers: gateway.admin, body: HTTPTestClient.json(["delta": 1])), 409, "capacity_exceeded")
        #expect(try await gateway.basket(basketId)["capacity"]?.int == 1_000_000_000)
        // Integral numbers in any JSON notation are integers; null is not a value for a number.
        let floaty = try await gateway.request(.POST, adjust, headers: gateway.admin, body: Array(#"{"delta": -1.0e0}"#.utf8))
        #expect(floaty.json?["stock"]?.int == 999_999_999)
        Self.expectError(
            try await gateway.request(.POST, adjust, headers: gateway.admin, body: Array(#"{"delta": null}"#.utf8)), 400, "invalid_request")
        // Ids in paths may be percent-encoded, as URL libraries write ':' and '@'.
        let encodedId = basketId + "%3Av2"
        #expect(
            try await gateway.request(.PUT, "/v1/baskets/\(encodedId)", headers: gateway.admin, body: body).json?["basketId"]?.stringValue == basketId
                + ":v2")
        await gateway.stop()
    }

    @Test(
        "bad basket bodies get 400",
        arguments: [
            #"{"stock": -1}"#, #"{"stock": "3"}"#, #"{"stock": 1.5}"#, #"{}"#, #"{"stock": 3, "holdSeconds": 0}"#,
            #"{"stock": 3, "holdSeconds": 86401}"#, #"{"stock": 3, "maxPerConsumer": 0}"#, #"[1]"#, #"{"stock": 3"#, "",
            #"{"stock": null}"#, #"{"stock": 3, "holdSeconds": null}"#, #"{"stock": 1e400}"#, #"{"stock": 9223372036854775808}"#,
        ])
    func badBasketBodies(body: String) async throws {
        let gateway = try await GatewayHarness.start()
        Self.expectError(
            try await gateway.request(.PUT, "/v1/baskets/\(TestEnvironment.uniqueId("b"))", headers: gateway.admin, body: Array(body.utf8)), 400,
            "invalid_request")
        await gateway.stop()
    }

    @Test("reservation errors: 400, 404, 409 sold_out and limit_exceeded, 404 reservation_not_found")
    func reservationErrors() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("b")
        try await gateway.createBasket(basketId, stock: 1, maxPerConsumer: 1)
        let path = "/v1/baskets/\(basketId)/reservations"
        for body in [
            #"{"consumerId": 5}"#, #"{"quantity": 1}"#, #"{"consumerId": "has space"}"#, #"{"consumerId": "c", "quantity": 0}"#,
            #"{"consumerId": "c", "quantity": "1"}"#, "not json", #"{"consumerId": "c",}"#,
            #"{"consumerId":"\#(String(repeating: "x", count: 129))"}"#,
        ] {
            Self.expectError(try await gateway.request(.POST, path, body: Array(body.utf8)), 400, "invalid_request")
        }
        Self.expectError(
            try await gateway.request(.POST, "/v1/baskets/bad%20id/reservations", body: HTTPTestClient.json(["consumerId": "c"])), 400,
            "invalid_request")
        Self.expectError(try await gateway.reserve(basketId, consumer: "c", idempotencyKey: "has space"), 400, "invalid_request")
        Self.expectError(try await gateway.reserve(basketId + "-none", consumer: "c"), 404, "basket_not_found")
        Self.expectError(try await gateway.reserve(basketId, consumer: "c", quantity: 2), 409, "limit_exceeded")
        let sentAt = Date()
        let granted = try await gateway.reserve(basketId, consumer: "c")
        let answeredAt = Date()
        #expect(granted.status == 201)
        let json = try #require(granted.json)
        #expect(json["basketId"]?.stringValue == basketId)
        #expect(json["consumerId"]?.stringValue == "c")
        #expect(json["quantity"]?.int == 1)
        #expect(json["status"]?.stringValue == "pending")
        #expect(json["remaining"]?.int == 0)
        let expiresAt = try #require(json["expiresAt"]?.stringValue)
        let parsed = try #require(ISO8601DateFormatter.withFractionalSeconds.date(from: expiresAt))
        // The hold started between sending and answering, however long that took (1 s of slack for
        // millisecond rounding).
        #expect(parsed >= sentAt.addingTimeInterval(599) && parsed <= answeredAt.addingTimeInterval(601), "\(expiresAt)")
        Self.expectError(try await gateway.reserve(basketId, consumer: "c"), 409, "limit_exceeded")
        Self.expectError(try await gateway.reserve(basketId, consumer: "d"), 409, "sold_out")
        Self.expectError(try await gateway.request(.GET, "/v1/reservations/00-nothing-here"), 404, "reservation_not_found")
        Self.expectError(try await gateway.request(.GET, "/v1/reservations/not-ours"), 404, "reservation_not_found")
        Self.expectError(try await gateway.request(.DELETE, "/v1/reservations/00-nothing-here"), 404, "reservation_not_found")
        Self.expectError(try await gateway.request(.GET, "/v1/reservations/bad!id"), 400, "invalid_request")
        await gateway.stop()
    }

    @Test("a 17 KiB body gets 413 payload_too_large")
    func payloadTooLarge() async throws {
        let gateway = try await GatewayHarness.start()
        let big = Array(#"{"consumerId":"c","pad":""#.utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 17 * 1024) + Array(#""}"#.utf8)
        Self.expectError(try await gateway.request(.POST, "/v1/baskets/b/reservations", body: big), 413, "payload_too_large")
        Self.expectError(try await gateway.request(.POST, "/v1/webhooks/payments", body: big), 413, "payload_too_large")
        // 16 KiB exactly is still read (and then judged on its content).
        let edge = Array(#"{"consumerId":"c","pad":""#.utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: 16 * 1024 - 29) + Array(#""}"#.utf8)
        #expect(edge.count <= 16 * 1024)
        #expect(
            try await gateway.request(.POST, "/v1/baskets/\(TestEnvironment.uniqueId("b"))/reservations", body: edge).errorCode == "basket_not_found")
        await gateway.stop()
    }

    @Test("a consumer over the rate limit gets 429 with Retry-After")
    func rateLimited() async throws {
        let gateway = try await GatewayHarness.start { $0.reserveRateLimit = 5 }
        let basketId = TestEnvironment.uniqueId("b")
        try await gateway.createBasket(basketId, stock: 100, maxPerConsumer: 100)
        let started = ContinuousClock.now
        let responses = try await withThrowingTaskGroup(of: TestHTTPResponse.self) { group in
            for _ in 0..<30 { group.addTask { try await gateway.reserve(basketId, consumer: "hasty") } }
            return try await group.reduce(into: [TestHTTPResponse]()) { $0.append($1) }
        }
        // Fixed one-second windows: however slow this machine is, at most 5 per window started.
        let elapsed = ContinuousClock.now - started
        let windows = Int(elapsed.components.seconds) + 2
        let granted = responses.filter { $0.status == 201 }.count
        let limited = responses.filter { $0.status == 429 }
        #expect(granted >= 5)
        #expect(granted <= 5 * windows)
        #expect(granted + limited.count == 30)
        if windows <= 4 { #expect(limited.count >= 30 - 5 * windows) }
        for response in limited {
            Self.expectError(response, 429, "rate_limited")
            #expect(response.headers.first(name: "retry-after") == "1")
        }
        #expect(try await gateway.reserve(basketId, consumer: "patient").status == 201, "the limit is per consumer")
        let recovered = try await eventually(interval: .milliseconds(100)) {
            try await gateway.reserve(basketId, consumer: "hasty").status == 201
        }
        #expect(recovered)
        await gateway.stop()
    }

    @Test("webhooks: tampered, wrongly keyed, old, future or missing signatures get 401 and change nothing")
    func webhookSignatures() async throws {
        let gateway = try await GatewayHarness.start()
        let (basketId, reservationId) = try await ConcurrencyTests.pendingReservation(gateway)
        let eventId = TestEnvironment.uniqueId("evt")
        let body = GatewayHarness.paymentBody(
            eventId: eventId, type: "payment.succeeded", reservationId: reservationId, paymentId: "p", amountCents: 100, currency: "EUR")
        // `now` is taken again right before each call: a slow machine must not drift into tolerance.
        var now: Int64 { Int64(Date().timeIntervalSince1970) }
        let signer = WebhookVerifier(secret: GatewayHarness.webhookSecret)
        let path = "/v1/webhooks/payments"
        var tampered = body
        tampered[tampered.count - 3] = UInt8(ascii: "X")
        Self.expectError(
            try await gateway.request(
                .POST, path, headers: [("Webhook-Signature", signer.signatureHeader(body: body, timestamp: now))], body: tampered), 401,
            "invalid_signature")
        Self.expectError(
            try await gateway.deliverPayment(eventId: eventId, reservationId: reservationId, secret: "not-the-secret"), 401, "invalid_signature")
        Self.expectError(
            try await gateway.deliverPayment(eventId: eventId, reservationId: reservationId, timestamp: now - 3_600), 401, "invalid_signature")
        Self.expectError(
            try await gateway.deliverPayment(eventId: eventId, reservationId: reservationId, timestamp: now + 3_600), 401, "invalid_signature")
        Self.expectError(try await gateway.request(.POST, path, body: body), 401, "invalid_signature")
        Self.expectError(
            try await gateway.request(.POST, path, headers: [("Webhook-Signature", "t=\(now),v1=zz")], body: body), 401, "invalid_signature")
        Self.expectError(try await gateway.request(.POST, path, headers: [("Webhook-Signature", "garbage")], body: body), 401, "invalid_signature")
        // Nothing was claimed: the first valid delivery is processed. (A signature a little old is
        // still good; the exact 300 s edge is a unit test with a fixed clock, not a race here.)
        let valid = try await gateway.deliverPayment(eventId: eventId, reservationId: reservationId, timestamp: now - 120)
        #expect(valid.json?["status"]?.stringValue == "processed")
        #expect(try await gateway.basket(basketId)["confirmed"]?.int == 1)
        await gateway.stop()
    }

    @Test("webhooks: signed but malformed bodies get 400; outcomes failed and unknown_reservation are recorded")
    func webhookBodies() async throws {
        let gateway = try await GatewayHarness.start()
        let signer = WebhookVerifier(secret: GatewayHarness.webhookSecret)
        let now = Int64(Date().timeIntervalSince1970)
        for body in [
            #"{"id":"e1","type":"payment.refunded","data":{"reservationId":"r","paymentId":"p","amountCents":1,"currency":"EUR"}}"#,
            #"{"id":"e1","type":"payment.succeeded"}"#,
            #"{"id":"e1","type":"payment.succeeded","data":{"reservationId":"bad id","paymentId":"p","amountCents":1,"currency":"EUR"}}"#,
            #"{"id":"e1","type":"payment.succeeded","data":{"reservationId":"r","paymentId":"p","amountCents":"1","currency":"EUR"}}"#, "{nope",
        ] {
            let bytes = Array(body.utf8)
            Self.expectError(
                try await gateway.request(
                    .POST, "/v1/webhooks/payments", headers: [("Webhook-Signature", signer.signatureHeader(body: bytes, timestamp: now))], body: bytes
                ), 400, "invalid_request")
        }
        let unknown = try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: "03-no-such-reservation")
        #expect(unknown.json == .object(["status": .string("processed"), "outcome": .string("unknown_reservation")]))
        let foreign = try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: "someone-elses-id")
        #expect(foreign.json?["outcome"]?.stringValue == "unknown_reservation")
        let (basketId, reservationId) = try await ConcurrencyTests.pendingReservation(gateway)
        let failed = try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), type: "payment.failed", reservationId: reservationId)
        #expect(failed.json?["outcome"]?.stringValue == "failed")
        let reservation = try await gateway.request(.GET, "/v1/reservations/\(reservationId)")
        #expect(reservation.json?["status"]?.stringValue == "pending", "a failed payment keeps the hold")
        #expect(try await gateway.basket(basketId)["pending"]?.int == 1)
        let secondPayment = try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: reservationId)
        #expect(secondPayment.json?["outcome"]?.stringValue == "confirmed")
        let doublePaid = try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: reservationId)
        #expect(doublePaid.json?["outcome"]?.stringValue == "refund_required", "a second payment of a confirmed reservation is refunded")
        await gateway.stop()
    }

    @Test("unknown paths get 404, wrong methods 405, both as JSON errors")
    func routing() async throws {
        let gateway = try await GatewayHarness.start()
        Self.expectError(try await gateway.request(.GET, "/v2/baskets/x"), 404, "not_found")
        Self.expectError(try await gateway.request(.GET, "/"), 404, "not_found")
        let wrongMethod = try await gateway.request(.POST, "/v1/baskets/x")
        Self.expectError(wrongMethod, 405, "method_not_allowed")
        #expect(wrongMethod.headers.first(name: "allow") == "GET, HEAD, PUT, PATCH")
        Self.expectError(try await gateway.request(.GET, "/v1/webhooks/payments"), 405, "method_not_allowed")
        Self.expectError(try await gateway.request(.DELETE, "/healthz"), 405, "method_not_allowed")
        let document = try await gateway.request(.GET, "/openapi.yaml")
        #expect(document.status == 200)
        #expect(document.headers.first(name: "content-type") == "application/yaml")
        #expect(document.text.hasPrefix("openapi: 3.1"))
        await gateway.stop()
    }

    @Test("healthz, readyz and metrics answer; readyz is 503 while Redis is down")
    func operations() async throws {
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        let gateway = try await GatewayHarness.start(redisURL: server.url, expiryLoop: false)
        #expect(try await gateway.request(.GET, "/healthz").status == 200)
        #expect(try await gateway.request(.GET, "/readyz").status == 200)
        try await gateway.createBasket("metrics-basket", stock: 1)
        _ = try await gateway.reserve("metrics-basket", consumer: "a")
        _ = try await gateway.reserve("metrics-basket", consumer: "b")
        let metrics = try await gateway.request(.GET, "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.headers.first(name: "content-type")?.hasPrefix("text/plain") == true)
        #expect(metrics.text.contains(#"gateway_reservations_total{outcome="granted"} 1"#))
        #expect(metrics.text.contains(#"gateway_reservations_total{outcome="sold_out"} 1"#))
        #expect(metrics.text.contains(#"gateway_http_requests_total{route="reserve",status="201"} 1"#))
        #expect(metrics.text.contains("gateway_redis_call_duration_seconds"))
        func counter(_ name: String) -> Int? {
            metrics.text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Int($0.split(separator: " ")[1]) }
        }
        // readyz, the basket and two reservations at least; never more batches than commands
        let batches = try #require(counter("gateway_redis_batches_total"))
        let commands = try #require(counter("gateway_redis_commands_total"))
        #expect(commands >= 4 && batches >= 1 && batches <= commands)
        server.stop()
        #expect(try await gateway.request(.GET, "/healthz").status == 200)
        let notReady = try await gateway.request(.GET, "/readyz")
        Self.expectError(notReady, 503, "unavailable")
        #expect(notReady.headers.first(name: "retry-after") == "1")
        Self.expectError(try await gateway.reserve("metrics-basket", consumer: "c"), 503, "unavailable")
        try await server.start()
        #expect(try await eventually { try await gateway.request(.GET, "/readyz").status == 200 })
        await gateway.stop()
        server.stop()
    }
}

extension ISO8601DateFormatter {
    static var withFractionalSeconds: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}
