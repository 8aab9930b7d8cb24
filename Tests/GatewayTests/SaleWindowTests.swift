import Foundation
import GatewayCore
import NIOHTTP1
import ReservationCore
import Synchronization
import TestSupport
import Testing

/// Sale windows (contract v2): `opensAt`, `closesAt`, `paused`, decided by Redis's clock inside
/// the reserve script. No test waits for a window to pass: windows are far from now and moved
/// with PATCH, so nothing depends on a step finishing inside a short wall-clock window.
@Suite("Sale windows")
struct SaleWindowTests {
    static func iso(_ milliseconds: Int64) -> String { RFC3339.format(milliseconds: milliseconds) }
    static var now: Int64 { WallClock.nowMilliseconds() }

    static func create(_ gateway: GatewayHarness, _ basketId: String, stock: Int, _ extra: [String: JSONValueLiteral] = [:]) async throws
        -> TestHTTPResponse
    {
        var fields: [String: JSONValueLiteral] = ["stock": .int(stock), "maxPerConsumer": .int(5)]
        fields.merge(extra) { $1 }
        return try await gateway.request(.PUT, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(fields))
    }

    static func patch(_ gateway: GatewayHarness, _ basketId: String, _ fields: [String: JSONValueLiteral]) async throws -> TestHTTPResponse {
        try await gateway.request(.PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(fields))
    }

    @Test("before opensAt: 409 sale_not_open with Retry-After and opensAt, nothing stored under the key; open after a PATCH")
    func scheduled() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("sched")
        let opensAt = Self.now + 3_600_000
        let created = try await Self.create(gateway, basketId, stock: 2, ["opensAt": .string(Self.iso(opensAt))])
        #expect(created.status == 201)
        #expect(created.json?["state"]?.stringValue == "scheduled")
        #expect(created.json?["opensAt"]?.stringValue == Self.iso(opensAt))
        let early = try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "k1")
        ContractErrorTests.expectError(early, 409, "sale_not_open")
        #expect(early.json?["opensAt"]?.stringValue == Self.iso(opensAt))
        let retry = Int(early.headers.first(name: "retry-after") ?? "") ?? 0
        #expect(retry >= 3_500 && retry <= 3_601, "whole seconds until it opens: \(retry)")
        #expect(try await gateway.basket(basketId)["stock"]?.int == 2, "nothing taken")
        // Opened now (opensAt in the past): the same key is answered afresh, not from a stored refusal.
        let opened = try await Self.patch(gateway, basketId, ["opensAt": .string(Self.iso(Self.now - 1000))])
        #expect(opened.status == 200 && opened.json?["state"]?.stringValue == "open")
        #expect(try await gateway.reserve(basketId, consumer: "c1", idempotencyKey: "k1").status == 201)
        // null removes it
        let cleared = try await Self.patch(gateway, basketId, ["opensAt": .null])
        #expect(cleared.json?["opensAt"] == .null)
        await gateway.stop()
    }

    @Test("paused: 409 sale_paused, not counted by the rate limit, cleared from this gateway's sold-out memory; unpaused sells again")
    func paused() async throws {
        let gateway = try await GatewayHarness.start { $0.reserveRateLimit = 2 }
        let basketId = TestEnvironment.uniqueId("pause")
        #expect(try await Self.create(gateway, basketId, stock: 1).status == 201)
        #expect(try await gateway.reserve(basketId, consumer: "first").status == 201)
        // sold out, remembered by the gateway
        for _ in 0..<2 { ContractErrorTests.expectError(try await gateway.reserve(basketId, consumer: "x"), 409, "sold_out") }
        let pausedView = try await Self.patch(gateway, basketId, ["paused": .bool(true)])
        #expect(pausedView.json?["paused"] == .bool(true) && pausedView.json?["state"]?.stringValue == "paused")
        ContractErrorTests.expectError(try await gateway.reserve(basketId, consumer: "x"), 409, "sale_paused")
        _ = try await gateway.request(
            .POST, "/v1/baskets/\(basketId)/stock-adjustments", headers: gateway.admin, body: HTTPTestClient.json(["delta": 3]))
        // Many refusals while paused: none is counted against the consumer's limit of 2 a second.
        for _ in 0..<6 { ContractErrorTests.expectError(try await gateway.reserve(basketId, consumer: "patient"), 409, "sale_paused") }
        #expect(try await Self.patch(gateway, basketId, ["paused": .bool(false)]).json?["state"]?.stringValue == "open")
        #expect(try await gateway.reserve(basketId, consumer: "patient").status == 201)
        await gateway.stop()
    }

    @Test("closed: 409 sale_closed, final under its key; cancels and payments work whatever the state")
    func closed() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("close")
        #expect(try await Self.create(gateway, basketId, stock: 3, ["closesAt": .string(Self.iso(Self.now + 3_600_000))]).status == 201)
        let held = try await gateway.reserve(basketId, consumer: "c1")
        let paidFor = try await gateway.reserve(basketId, consumer: "c2")
        let heldId = try #require(held.json?["reservationId"]?.stringValue)
        let paidId = try #require(paidFor.json?["reservationId"]?.stringValue)
        let closedView = try await Self.patch(gateway, basketId, ["closesAt": .string(Self.iso(Self.now - 1000))])
        #expect(closedView.json?["state"]?.stringValue == "closed")
        ContractErrorTests.expectError(try await gateway.reserve(basketId, consumer: "c3", idempotencyKey: "late"), 409, "sale_closed")
        #expect(try await gateway.request(.DELETE, "/v1/reservations/\(heldId)").json?["status"]?.stringValue == "cancelled")
        let payment = try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("ev"), reservationId: paidId)
        #expect(payment.json?["outcome"]?.stringValue == "confirmed")
        // Reopened: the stored sale_closed stands for its key (final), a new key is served.
        #expect(try await Self.patch(gateway, basketId, ["closesAt": .null]).json?["state"]?.stringValue == "open")
        ContractErrorTests.expectError(try await gateway.reserve(basketId, consumer: "c3", idempotencyKey: "late"), 409, "sale_closed")
        #expect(try await gateway.reserve(basketId, consumer: "c3", idempotencyKey: "fresh").status == 201)
        await gateway.stop()
    }

    @Test("bad windows are 400: closing before opening (in the body or with the stored window), malformed times; PATCH needs the admin token")
    func badWindows() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("bad")
        let opens = Self.now + 600_000
        let backwards: [String: JSONValueLiteral] = ["opensAt": .string(Self.iso(opens)), "closesAt": .string(Self.iso(opens - 1))]
        ContractErrorTests.expectError(try await Self.create(gateway, basketId, stock: 1, backwards), 400, "invalid_request")
        for bad in ["2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "tomorrow", "2026-12-24 10:00:00", "1969-12-31T23:59:59Z", ""] {
            ContractErrorTests.expectError(try await Self.create(gateway, basketId, stock: 1, ["opensAt": .string(bad)]), 400, "invalid_request")
        }
        ContractErrorTests.expectError(try await Self.create(gateway, basketId, stock: 1, ["opensAt": .int(5)]), 400, "invalid_request")
        #expect(try await Self.create(gateway, basketId, stock: 1, ["opensAt": .string(Self.iso(opens))]).status == 201)
        // a closing time before the stored opening: refused by the script, nothing changed
        ContractErrorTests.expectError(
            try await Self.patch(gateway, basketId, ["closesAt": .string(Self.iso(opens - 1))]), 400, "invalid_request")
        #expect(try await gateway.basket(basketId)["closesAt"] == .null)
        ContractErrorTests.expectError(try await Self.patch(gateway, basketId, ["paused": .string("yes")]), 400, "invalid_request")
        ContractErrorTests.expectError(
            try await gateway.request(.PATCH, "/v1/baskets/\(basketId)", body: HTTPTestClient.json(["paused": .bool(true)])), 401, "unauthorized")
        ContractErrorTests.expectError(
            try await Self.patch(gateway, TestEnvironment.uniqueId("none"), ["paused": .bool(true)]), 404, "basket_not_found")
        let hold = try await Self.patch(gateway, basketId, ["holdSeconds": .int(30), "maxPerConsumer": .int(2)])
        #expect(hold.json?["holdSeconds"]?.int == 30 && hold.json?["maxPerConsumer"]?.int == 2)
        await gateway.stop()
    }
}

extension SaleWindowTests {
    /// Redis time of a grant: its expiry minus the basket's hold.
    static func grantedAt(_ response: TestHTTPResponse, holdSeconds: Int64) -> Int64? {
        guard let text = response.json?["expiresAt"]?.stringValue, let expires = RFC3339.parse(text) else { return nil }
        return expires - holdSeconds * 1000
    }

    @Test("a sale scheduled ahead opens for every gateway at opensAt by Redis's clock: no grant before it, each gateway grants after it")
    func opensForEveryGateway() async throws {
        let gateways = [try await GatewayHarness.start(), try await GatewayHarness.start(), try await GatewayHarness.start()]
        let basketId = TestEnvironment.uniqueId("open")
        let opensAt = Self.now + 2_000
        #expect(
            try await Self.create(gateways[0], basketId, stock: 1_000, ["opensAt": .string(Self.iso(opensAt)), "holdSeconds": 600]).status == 201)
        // Each gateway asks until it is granted (polling generously: a loaded machine may take long).
        let firsts = try await withThrowingTaskGroup(of: (Int, Int64?, Int).self) { group in
            for (index, gateway) in gateways.enumerated() {
                group.addTask {
                    var attempt = 0
                    let deadline = ContinuousClock.now + .seconds(120)
                    while ContinuousClock.now < deadline {
                        attempt += 1
                        let answer = try await gateway.reserve(basketId, consumer: "g\(index)-\(attempt)")
                        if answer.status == 201 { return (index, Self.grantedAt(answer, holdSeconds: 600), attempt) }
                        #expect(answer.errorCode == "sale_not_open", "\(answer.text)")
                        try await Task.sleep(for: .milliseconds(2))
                    }
                    return (index, nil, attempt)
                }
            }
            return try await group.reduce(into: [(Int, Int64?, Int)]()) { $0.append($1) }
        }
        for (index, grantedAt, _) in firsts {
            let at = try #require(grantedAt, "gateway \(index) was granted")
            #expect(at >= opensAt, "gateway \(index) granted \(opensAt - at) ms before opensAt")
        }
        let times = firsts.compactMap(\.1)
        print("sale open: first grant per gateway \(times.map { $0 - opensAt }) ms after opensAt (Redis time)")
        for gateway in gateways { await gateway.stop() }
    }

    @Test("pausing under load: no request sent after the PATCH's answer is granted")
    func pauseUnderLoad() async throws {
        let gateways = [try await GatewayHarness.start(), try await GatewayHarness.start()]
        let basketId = TestEnvironment.uniqueId("load")
        #expect(try await Self.create(gateways[0], basketId, stock: 1_000_000).status == 201)
        let answered = PauseAnswered()
        let late = try await withThrowingTaskGroup(of: [String].self) { group in
            for client in 0..<8 {
                group.addTask {
                    var violations: [String] = []
                    var index = 0
                    while true {
                        let sent = ContinuousClock.now
                        let pausedAt = answered.instant.withLock { $0 }
                        if let pausedAt, sent > pausedAt + .milliseconds(500) { break }
                        index += 1
                        let answer = try await gateways[client % 2].reserve(basketId, consumer: "load-\(client)-\(index)")
                        if let pausedAt, sent > pausedAt, answer.status == 201 { violations.append(answer.text) }
                        if let pausedAt, sent > pausedAt { #expect(answer.errorCode == "sale_paused", "\(answer.text)") }
                    }
                    return violations
                }
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(300))
                let paused = try await Self.patch(gateways[1], basketId, ["paused": .bool(true)])
                #expect(paused.status == 200)
                answered.instant.withLock { $0 = ContinuousClock.now }
                return []
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(late.isEmpty, "granted after the pause was answered: \(late.prefix(3))")
        for gateway in gateways { await gateway.stop() }
    }
}

/// When the PATCH that paused the sale was answered (shared by the load's tasks).
final class PauseAnswered: Sendable {
    let instant = Mutex<ContinuousClock.Instant?>(nil)
}
