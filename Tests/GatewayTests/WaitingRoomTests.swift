import ConsumerTokens
import Foundation
import GatewayCore
import NIOHTTP1
import RedisClient
import ReservationCore
import TestSupport
import Testing
import WaitingRoom

/// The waiting room (contract v2, "Waiting room") end to end on a real gateway and a real Redis:
/// one place per consumer, the pre-queue's draw, admission at the configured rate, admissions on
/// reservations, sold out and closed reaching every ticket. Nothing waits for a clock: tests poll
/// with generous limits, and admission times are checked from the answers' own timestamps.
@Suite("Waiting room")
struct WaitingRoomTests {
    static let passes = RoomPasses(secret: Array(GatewayHarness.admissionSecret.utf8))
    static var now: Int64 { WallClock.nowMilliseconds() }
    static func iso(_ milliseconds: Int64) -> String { RFC3339.format(milliseconds: milliseconds) }

    static func room(perMinute: Int, seconds: Int = 300) -> JSONValueLiteral {
        .raw(#"{"admitPerMinute":\#(perMinute),"admissionSeconds":\#(seconds)}"#)
    }

    @discardableResult
    static func create(
        _ gateway: GatewayHarness, _ basketId: String, stock: Int = 10, perMinute: Int = 600, seconds: Int = 300,
        _ extra: [String: JSONValueLiteral] = [:]
    ) async throws -> TestHTTPResponse {
        var fields: [String: JSONValueLiteral] = [
            "stock": .int(stock), "maxPerConsumer": 2, "waitingRoom": room(perMinute: perMinute, seconds: seconds),
        ]
        fields.merge(extra) { $1 }
        let response = try await gateway.request(.PUT, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(fields))
        #expect(response.status == 201, "\(response.text)")
        return response
    }

    static func join(_ gateway: GatewayHarness, _ basketId: String, _ consumer: String, headers: [(String, String)] = []) async throws
        -> TestHTTPResponse
    {
        try await gateway.request(
            .POST, "/v1/baskets/\(basketId)/queue", headers: headers, body: HTTPTestClient.json(["consumerId": .string(consumer)]))
    }

    static func poll(_ gateway: GatewayHarness, _ basketId: String, _ ticket: String, headers: [(String, String)] = []) async throws
        -> TestHTTPResponse
    {
        try await gateway.request(.GET, "/v1/baskets/\(basketId)/queue/\(ticket)", headers: headers)
    }

    static func ticketText(_ response: TestHTTPResponse) throws -> String {
        try #require(response.json?["ticket"]?.stringValue, "\(response.status) \(response.text)")
    }

    static func ticket(_ response: TestHTTPResponse) throws -> Ticket {
        try #require(passes.ticket(try ticketText(response)))
    }

    /// Polls `ticket` until its state is `state` (generous limit), and answers the view.
    static func pollUntil(_ gateway: GatewayHarness, _ basketId: String, _ ticket: String, _ state: String) async throws -> TestHTTPResponse {
        var last: TestHTTPResponse?
        let reached = try await eventually(interval: .milliseconds(50)) {
            last = try await poll(gateway, basketId, ticket)
            return last?.json?["state"]?.stringValue == state
        }
        #expect(reached, "never \(state): \(last?.text ?? "")")
        return try #require(last)
    }

    static func reserve(_ gateway: GatewayHarness, _ basketId: String, _ consumer: String, admission: String?) async throws -> TestHTTPResponse {
        let headers = admission.map { [("Admission-Token", $0)] } ?? []
        return try await gateway.request(
            .POST, "/v1/baskets/\(basketId)/reservations", headers: headers, body: HTTPTestClient.json(["consumerId": .string(consumer)]))
    }

    @Test("one place per consumer: joining again, from any gateway, gives the same ticket and place; 404, 409 and 400 as the contract says")
    func onePlacePerConsumer() async throws {
        let first = try await GatewayHarness.start()
        let second = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-one")
        try await Self.create(first, basketId, perMinute: 1)
        let joined = try await Self.join(first, basketId, "alice")
        #expect(joined.status == 200)
        let ticket = try Self.ticket(joined)
        for gateway in [first, second, first] {
            let again = try Self.ticket(try await Self.join(gateway, basketId, "alice"))
            #expect(again.join == ticket.join && again.epoch == ticket.epoch && again.consumerId == "alice" && again.basketId == basketId)
        }
        let bob = try Self.ticket(try await Self.join(second, basketId, "bob"))
        #expect(bob.join == ticket.join + 1)
        // (the view's counts are the gateway's room snapshot, at most a second old)
        var view = try await second.basket(basketId)
        #expect(
            try await eventually {
                view = try await second.basket(basketId)
                return view["waitingRoom"]?["members"]?.int == 2
            })
        #expect(view["waitingRoom"]?["admitPerMinute"]?.int == 1 && view["waitingRoom"]?["admissionSeconds"]?.int == 300)
        // A poll on either gateway answers the same view.
        let polled = [
            try await Self.poll(first, basketId, try Self.ticketText(joined)), try await Self.poll(second, basketId, try Self.ticketText(joined)),
        ]
        #expect(polled.allSatisfy { $0.status == 200 && $0.json?["basketId"]?.stringValue == basketId })

        ContractErrorTests.expectError(try await Self.join(first, TestEnvironment.uniqueId("wr-none"), "alice"), 404, "basket_not_found")
        let plain = TestEnvironment.uniqueId("wr-plain")
        try await first.createBasket(plain, stock: 1)
        ContractErrorTests.expectError(try await Self.join(first, plain, "alice"), 409, "no_waiting_room")
        for body in ["{}", #"{"consumerId":"bad id"}"#, #"{"consumerId":5}"#, "[", ""] {
            let bad = try await first.request(.POST, "/v1/baskets/\(basketId)/queue", body: Array(body.utf8))
            ContractErrorTests.expectError(bad, 400, "invalid_request")
        }
        await first.stop()
        await second.stop()
    }

    @Test("a forged, altered, other basket's or other room's ticket is 404 ticket_not_found; an admission is no ticket")
    func foreignTickets() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-forge")
        let other = TestEnvironment.uniqueId("wr-other")
        try await Self.create(gateway, basketId, perMinute: 1)
        try await Self.create(gateway, other, perMinute: 1_000_000)
        let ticket = try Self.ticketText(try await Self.join(gateway, basketId, "alice"))
        let theirs = try Self.ticketText(try await Self.join(gateway, other, "alice"))
        let admitted = try await Self.pollUntil(gateway, other, theirs, "admitted")
        let admission = try #require(admitted.json?["admissionToken"]?.stringValue)
        var altered = Array(ticket.utf8)
        altered[10] = altered[10] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let forgedByOtherKey = RoomPasses(secret: Array("not-the-secret".utf8)).sign(try #require(Self.passes.ticket(ticket)))
        var anotherRoom = try #require(Self.passes.ticket(ticket))
        anotherRoom.epoch = String(repeating: "0", count: 32)
        for bad in [
            String(decoding: altered, as: UTF8.self), forgedByOtherKey, theirs, admission, Self.passes.sign(anotherRoom), "t1.x.y", "nope",
            String(repeating: "A", count: 900),
        ] {
            ContractErrorTests.expectError(try await Self.poll(gateway, basketId, bad), 404, "ticket_not_found")
        }
        #expect(try await Self.poll(gateway, basketId, ticket).status == 200)
        await gateway.stop()
    }

    @Test("the pre-queue: one uniformly random order drawn at the opening, published seed reproduces it, later joiners follow in order")
    func preQueueDraw() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-draw")
        // Opens in an hour: everyone below joins the pre-queue; then the opening is moved to now.
        // Admissions of an hour: place 1 is admitted at the opening, and polling 2,000 tickets one
        // by one on a loaded machine can outlast the default 5 minutes (it would read "expired").
        try await Self.create(gateway, basketId, stock: 5, perMinute: 1, seconds: 3_600, ["opensAt": .string(Self.iso(Self.now + 3_600_000))])
        let count = 2000
        let tickets = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            var tickets = [String](repeating: "", count: count)
            var next = 0
            func add() {
                let index = next
                next += 1
                group.addTask { (index, try Self.ticketText(try await Self.join(gateway, basketId, "c\(index)"))) }
            }
            for _ in 0..<min(32, count) { add() }
            while let (index, ticket) = try await group.next() {
                tickets[index] = ticket
                if next < count { add() }
            }
            return tickets
        }
        let joins = try tickets.map { try #require(Self.passes.ticket($0)).join }
        #expect(Set(joins) == Set(1...Int64(count)), "one join number each")
        let early = try await Self.poll(gateway, basketId, tickets[0])
        #expect(early.json?["state"]?.stringValue == "prequeue" && early.json?["position"] == .null)
        // The view's counts come from the gateway's room snapshot, at most a second old.
        var before = try await gateway.basket(basketId)
        let counted = try await eventually {
            before = try await gateway.basket(basketId)
            return before["waitingRoom"]?["members"]?.int == count
        }
        #expect(counted && before["waitingRoom"]?["seed"] == .null, "no seed before the draw: \(before)")
        // Joining again, many times, changes nothing.
        for _ in 0..<3 { #expect(try Self.ticket(try await Self.join(gateway, basketId, "c7")).join == joins[7]) }

        let opened = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(["opensAt": .string(Self.iso(Self.now - 1000))]))
        #expect(opened.status == 200)
        var places = [Int64](repeating: 0, count: count)
        for (index, ticket) in tickets.enumerated() {
            let view = try await Self.poll(gateway, basketId, ticket)
            let state = view.json?["state"]?.stringValue
            #expect(state == "waiting" || state == "admitted", "\(view.text)")
            places[index] = try Self.ticket(view).place
        }
        #expect(Set(places) == Set(1...Int64(count)), "every place once")
        // The seed is published after the opening, and anyone can recompute the whole order.
        let after = try await gateway.basket(basketId)
        let seed = try #require(after["waitingRoom"]?["seed"]?.stringValue)
        #expect(after["waitingRoom"]?["preQueue"]?.int == count && after["waitingRoom"]?["drawnAt"]?.stringValue != nil)
        let order = try #require(QueueOrder(seedHex: seed, count: Int64(count)))
        #expect(zip(joins, places).allSatisfy { order.place(ofJoin: $0) == $1 }, "the published seed reproduces the draw")
        // Fair: the place does not follow the join order. For a uniform draw Spearman's rho has
        // standard deviation 1/sqrt(1999) = 0.022; |rho| >= 0.15 is 6.7 deviations (p < 1e-10).
        let n = Double(count)
        let squares = zip(joins, places).reduce(0.0) { $0 + pow(Double($1.0 - $1.1), 2) }
        let rho = 1 - 6 * squares / (n * (n * n - 1))
        #expect(abs(rho) < 0.15, "rank correlation of join order and place: \(rho)")
        // Later joiners queue behind the pre-queue, in arrival order.
        let late = try Self.ticket(try await Self.join(gateway, basketId, "late-1"))
        let later = try Self.ticket(try await Self.join(gateway, basketId, "late-2"))
        #expect(late.place == Int64(count) + 1 && late.join == Int64(count) + 1 && later.place == Int64(count) + 2)
        // A consumer of the pre-queue joining again keeps the drawn place.
        #expect(
            try Self.ticket(try await Self.poll(gateway, basketId, try Self.ticketText(try await Self.join(gateway, basketId, "c7")))).place
                == places[7])
        await gateway.stop()
    }

    @Test("an opening moved into the future re-opens the pre-queue: everyone joined so far is drawn again, with a new seed")
    func openingMovedLater() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-redraw")
        // Open at once: the first use draws an empty pre-queue; joiners queue in arrival order.
        try await Self.create(gateway, basketId, perMinute: 1)
        let early = try await Self.join(gateway, basketId, "bot-1")
        #expect(try Self.ticket(early).place == 1)
        _ = try await Self.join(gateway, basketId, "bot-2")
        let firstSeed = try await gateway.basket(basketId)["waitingRoom"]?["seed"]?.stringValue
        #expect(firstSeed != nil)
        let later = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin,
            body: HTTPTestClient.json(["opensAt": .string(Self.iso(Self.now + 3_600_000))]))
        #expect(later.status == 200)
        let again = try await Self.poll(gateway, basketId, try Self.ticketText(early))
        #expect(again.json?["state"]?.stringValue == "prequeue", "\(again.text)")
        let alice = try Self.ticketText(try await Self.join(gateway, basketId, "alice"))
        #expect(try await Self.poll(gateway, basketId, alice).json?["state"]?.stringValue == "prequeue")
        _ = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin,
            body: HTTPTestClient.json(["opensAt": .string(Self.iso(Self.now - 1000))]))
        var places: [Int64] = []
        for ticket in [try Self.ticketText(early), try Self.ticketText(try await Self.join(gateway, basketId, "bot-2")), alice] {
            places.append(try Self.ticket(try await Self.poll(gateway, basketId, ticket)).place)
        }
        #expect(Set(places) == [1, 2, 3], "all three drawn: \(places)")
        let view = try await gateway.basket(basketId)
        #expect(view["waitingRoom"]?["preQueue"]?.int == 3)
        let secondSeed = try #require(view["waitingRoom"]?["seed"]?.stringValue)
        #expect(secondSeed != firstSeed)
        let order = try #require(QueueOrder(seedHex: secondSeed, count: 3))
        #expect(places == [order.place(ofJoin: 1), order.place(ofJoin: 2), order.place(ofJoin: 3)])
        await gateway.stop()
    }

    @Test("a lone joiner of an open room nobody waits in is admitted at once; a burst behind them waits its turn")
    func emptyRoomAdmitsAtOnce() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-empty")
        try await Self.create(gateway, basketId, perMinute: 1)
        let first = try await Self.join(gateway, basketId, "first")
        let place = try Self.ticket(first).place
        #expect(first.json?["state"]?.stringValue == "admitted" && place == 1, "\(first.text)")
        let second = try await Self.join(gateway, basketId, "second")
        #expect(second.json?["state"]?.stringValue == "waiting" && second.json?["position"]?.int == 1, "\(second.text)")
        await gateway.stop()
    }

    @Test("admission in order at admitPerMinute from the opening: each place's admission time is the schedule's, to the millisecond")
    func admissionRate() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-rate")
        // 600 a minute: one place every 100 ms; admissions last an hour (so none expires before
        // this test, polling one ticket after another on a loaded machine, gets to it). Everyone
        // joins the pre-queue first (however slowly), then the sale opens: one schedule from the
        // opening on.
        try await Self.create(gateway, basketId, perMinute: 600, seconds: 3_600, ["opensAt": .string(Self.iso(Self.now + 3_600_000))])
        var tickets: [String] = []
        for index in 0..<12 { tickets.append(try Self.ticketText(try await Self.join(gateway, basketId, "r\(index)"))) }
        let opened = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(["opensAt": .string(Self.iso(Self.now))]))
        #expect(opened.status == 200)
        let opensAt = try #require(opened.json?["opensAt"]?.stringValue.flatMap(RFC3339.parse))
        var admittedAt: [Int64: Int64] = [:]
        for ticket in tickets {
            let view = try await Self.pollUntil(gateway, basketId, ticket, "admitted")
            let seen = Self.now
            let expires = try #require(view.json?["admissionExpiresAt"]?.stringValue.flatMap(RFC3339.parse))
            let place = try Self.ticket(view).place
            admittedAt[place] = expires - 3_600_000
            // Never admitted early (by more than the poll cache's extrapolation could err).
            #expect(seen + 1_000 >= expires - 3_600_000)
            #expect(view.json?["admissionToken"]?.stringValue?.hasPrefix("a1.") == true)
        }
        // Place 1 at the opening, then 100 ms apart, place by place: no more than the rate, and no less.
        let first = try #require(admittedAt[1])
        #expect(first >= opensAt && first - opensAt < 60_000, "place 1 at the opening")
        let places = admittedAt.keys.sorted()
        #expect(places == Array(1...12))
        for (earlier, later) in zip(places, places.dropFirst()) {
            #expect(try #require(admittedAt[later]) - (try #require(admittedAt[earlier])) == (later - earlier) * 100, "\(admittedAt)")
        }
        await gateway.stop()
    }

    @Test("paused: admission stops (positions stay) and resumes after; cheap polls: about one room read per second whatever the polls")
    func pauseStopsAdmission() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-pause")
        // Thirty in the pre-queue (however slowly they join), then opened and paused at once.
        try await Self.create(gateway, basketId, perMinute: 60, ["opensAt": .string(Self.iso(Self.now + 3_600_000))])
        var tickets: [String] = []
        for index in 0..<30 { tickets.append(try Self.ticketText(try await Self.join(gateway, basketId, "p\(index)"))) }
        let patch = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin,
            body: HTTPTestClient.json(["paused": .bool(true), "opensAt": .string(Self.iso(Self.now - 1000))]))
        #expect(patch.status == 200 && patch.json?["state"]?.stringValue == "paused")
        var last = ""
        var position = 0
        for ticket in tickets {
            let view = try await Self.poll(gateway, basketId, ticket)
            if let at = view.json?["position"]?.int, at > position { (last, position) = (try Self.ticketText(view), at) }
        }
        #expect(position == 30, "nothing admitted while paused: the last place is 30 from the front")
        // Polled hard for 3 s (3 places' worth at 60 a minute): the position stays, and Redis is asked
        // about once a second, not once a poll.
        let reads = try await ReplicatedAcknowledgementTests.metric(gateway, "gateway_queue_room_reads_total")
        let started = ContinuousClock.now
        var polls = 0
        while ContinuousClock.now - started < .seconds(3) {
            #expect(try await Self.poll(gateway, basketId, last).json?["position"]?.int == position)
            polls += 1
        }
        let elapsed = Double((ContinuousClock.now - started).components.seconds) + 1
        let readsAfter = try await ReplicatedAcknowledgementTests.metric(gateway, "gateway_queue_room_reads_total")
        #expect(Double(readsAfter - reads) <= elapsed + 2, "\(readsAfter - reads) room reads for \(polls) polls")
        _ = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(["paused": .bool(false)]))
        let moved = try await eventually {
            (try await Self.poll(gateway, basketId, last).json?["position"]?.int ?? position) < position
        }
        #expect(moved, "admission resumed")
        await gateway.stop()
    }

    @Test("a basket with a room reserves only with this room's unexpired admission for this consumer: every other is 403, nothing changes")
    func admissionRequired() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-adm")
        let other = TestEnvironment.uniqueId("wr-adm-other")
        try await Self.create(gateway, basketId, stock: 5, perMinute: 1_000_000)
        try await Self.create(gateway, other, stock: 5, perMinute: 1_000_000)
        func admission(_ basket: String, _ consumer: String) async throws -> String {
            let ticket = try Self.ticketText(try await Self.join(gateway, basket, consumer))
            return try #require(try await Self.pollUntil(gateway, basket, ticket, "admitted").json?["admissionToken"]?.stringValue)
        }
        let alice = try await admission(basketId, "alice")
        let bob = try await admission(basketId, "bob")
        let elsewhere = try await admission(other, "alice")
        let real = try #require(Self.passes.admission(alice))
        var expired = real
        expired.expiresAtMilliseconds = Self.now - 1_000
        var foreignRoom = real
        foreignRoom.epoch = String(repeating: "f", count: 32)
        var altered = Array(alice.utf8)
        altered[alice.utf8.count - 5] = altered[alice.utf8.count - 5] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        let ticketAsAdmission = try Self.ticketText(try await Self.join(gateway, basketId, "alice"))
        for bad: String? in [
            nil, "", "nope", bob, elsewhere, Self.passes.sign(expired), Self.passes.sign(foreignRoom), String(decoding: altered, as: UTF8.self),
            RoomPasses(secret: Array("guess".utf8)).sign(real), ticketAsAdmission, String(repeating: "a", count: 2000),
        ] {
            ContractErrorTests.expectError(try await Self.reserve(gateway, basketId, "alice", admission: bad), 403, "admission_required")
        }
        #expect(try await gateway.basket(basketId)["stock"]?.int == 5, "nothing taken")
        // Two Admission-Token headers: neither is believed.
        let doubled = try await gateway.request(
            .POST, "/v1/baskets/\(basketId)/reservations", headers: [("Admission-Token", alice), ("Admission-Token", alice)],
            body: HTTPTestClient.json(["consumerId": "alice"]))
        ContractErrorTests.expectError(doubled, 403, "admission_required")
        // The admission allows the consumer's usual maxPerConsumer (2), no more.
        #expect(try await Self.reserve(gateway, basketId, "alice", admission: alice).status == 201)
        #expect(try await Self.reserve(gateway, basketId, "alice", admission: alice).status == 201)
        ContractErrorTests.expectError(try await Self.reserve(gateway, basketId, "alice", admission: alice), 409, "limit_exceeded")
        #expect(try await Self.reserve(gateway, basketId, "bob", admission: bob).status == 201)
        // A basket without a room ignores the header.
        let plain = TestEnvironment.uniqueId("wr-adm-plain")
        try await gateway.createBasket(plain, stock: 1)
        #expect(try await Self.reserve(gateway, plain, "carol", admission: "whatever").status == 201)
        // Removing the room opens the basket to everyone; a room added again is a new room.
        let removed = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(["waitingRoom": .null]))
        #expect(removed.status == 200 && removed.json?["waitingRoom"] == .null)
        #expect(try await Self.reserve(gateway, basketId, "dave", admission: nil).status == 201)
        _ = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(["waitingRoom": Self.room(perMinute: 5)]))
        ContractErrorTests.expectError(try await Self.reserve(gateway, other, "bob", admission: bob), 403, "admission_required")
        ContractErrorTests.expectError(try await Self.poll(gateway, basketId, ticketAsAdmission), 404, "ticket_not_found")
        await gateway.stop()
    }

    @Test(
        "without an admission the answer is 403, also on a sold-out basket and with an Idempotency-Key; a gateway that knows the room refuses without Redis"
    )
    func refusedWithoutAdmission() async throws {
        // (no expiry loop: its calls would be counted with the refusals'; room snapshots kept a
        // minute, so that no refusal below depends on how fast the machine is)
        let gateway = try await GatewayHarness.start(expiryLoop: false) { $0.queueCacheMilliseconds = 60_000 }
        let basketId = TestEnvironment.uniqueId("wr-local")
        try await Self.create(gateway, basketId, stock: 1, perMinute: 1_000_000)
        var admissions: [String: String] = [:]
        for consumer in ["a", "b"] {
            let ticket = try Self.ticketText(try await Self.join(gateway, basketId, consumer))
            admissions[consumer] = try await Self.pollUntil(gateway, basketId, ticket, "admitted").json?["admissionToken"]?.stringValue
        }
        #expect(try await Self.reserve(gateway, basketId, "a", admission: admissions["a"]).status == 201)
        // b, admitted, meets the sold-out basket (the gateway's sold-out memory learns it) ...
        ContractErrorTests.expectError(try await Self.reserve(gateway, basketId, "b", admission: admissions["b"]), 409, "sold_out")
        ContractErrorTests.expectError(try await Self.reserve(gateway, basketId, "b", admission: admissions["b"]), 409, "sold_out")
        // ... but nobody without an admission is told anything but 403, keyed or not, and nothing is stored.
        for _ in 0..<3 {
            ContractErrorTests.expectError(try await Self.reserve(gateway, basketId, "c", admission: nil), 403, "admission_required")
            let keyed = try await gateway.request(
                .POST, "/v1/baskets/\(basketId)/reservations", headers: [("Idempotency-Key", "k-c")],
                body: HTTPTestClient.json(["consumerId": "c"]))
            ContractErrorTests.expectError(keyed, 403, "admission_required")
        }
        // Refused from this gateway's room snapshot (a join just stored it): 100 refusals and 100
        // polls cost Redis nothing (asked of Redis, the refusals alone would be 100 commands).
        let ticket = try Self.ticketText(try await Self.join(gateway, basketId, "a"))
        let before = try await ReplicatedAcknowledgementTests.metric(gateway, "gateway_redis_commands_total")
        let readsBefore = try await ReplicatedAcknowledgementTests.metric(gateway, "gateway_queue_room_reads_total")
        let started = ContinuousClock.now
        for index in 0..<100 {
            _ = try await Self.poll(gateway, basketId, ticket)
            ContractErrorTests.expectError(try await Self.reserve(gateway, basketId, "bot\(index)", admission: nil), 403, "admission_required")
        }
        let after = try await ReplicatedAcknowledgementTests.metric(gateway, "gateway_redis_commands_total")
        let seconds = Int((ContinuousClock.now - started).components.seconds)
        // The snapshot lives a second: a loop slower than that (a loaded machine) reads the room
        // again about once a second, and a refusal that meets the snapshot just expired is asked
        // of Redis once before the next poll refreshes it. So: at most one room read a second
        // (the cache works), and at most two commands per read, plus a few for the gateway's own
        // background work, never the 100 refusals.
        let reads = try await ReplicatedAcknowledgementTests.metric(gateway, "gateway_queue_room_reads_total") - readsBefore
        #expect(reads <= seconds + 2, "\(reads) room reads in \(seconds) s")
        #expect(
            after - before <= 2 * reads + 5, "\(after - before) Redis commands (\(reads) room reads in \(seconds) s) for 100 refusals and 100 polls")
        await gateway.stop()
    }

    @Test("sold out reaches every waiting ticket once no unit is left or held; closed after closesAt; a join then is 409 sale_closed")
    func soldOutAndClosed() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-sold")
        // One a minute: the first place is admitted at the opening, the others wait.
        try await Self.create(gateway, basketId, stock: 1, perMinute: 1)
        let first = try Self.ticketText(try await Self.join(gateway, basketId, "first"))
        var waiting: [String] = []
        for index in 0..<5 { waiting.append(try Self.ticketText(try await Self.join(gateway, basketId, "w\(index)"))) }
        let admitted = try await Self.pollUntil(gateway, basketId, first, "admitted")
        let held = try await Self.reserve(gateway, basketId, "first", admission: admitted.json?["admissionToken"]?.stringValue)
        #expect(held.status == 201)
        // Stock 0, but the hold could come back: still waiting.
        for ticket in waiting { #expect(try await Self.poll(gateway, basketId, ticket).json?["state"]?.stringValue == "waiting") }
        let reservationId = try #require(held.json?["reservationId"]?.stringValue)
        #expect(try await gateway.deliverPayment(eventId: TestEnvironment.uniqueId("evt"), reservationId: reservationId).status == 200)
        for ticket in waiting { _ = try await Self.pollUntil(gateway, basketId, ticket, "sold_out") }

        // Closed by moving closesAt into the past (no test waits for a clock to pass a deadline).
        let closing = TestEnvironment.uniqueId("wr-close")
        try await Self.create(gateway, closing, perMinute: 1, ["closesAt": .string(Self.iso(Self.now + 3_600_000))])
        let ticket = try Self.ticketText(try await Self.join(gateway, closing, "late"))
        let closed = try await gateway.request(
            .PATCH, "/v1/baskets/\(closing)", headers: gateway.admin, body: HTTPTestClient.json(["closesAt": .string(Self.iso(Self.now - 1000))]))
        #expect(closed.status == 200 && closed.json?["state"]?.stringValue == "closed", "\(closed.text)")
        _ = try await Self.pollUntil(gateway, closing, ticket, "closed")
        ContractErrorTests.expectError(try await Self.join(gateway, closing, "later"), 409, "sale_closed")
        await gateway.stop()
    }

    @Test("an admission unused past admissionSeconds expires; joining again puts the consumer at the back with a new place")
    func expiredAdmission() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-exp")
        try await Self.create(gateway, basketId, perMinute: 1_000_000, seconds: 30)
        let joined = try await Self.join(gateway, basketId, "slow")
        let first = try Self.ticket(joined)
        let admitted = try await Self.pollUntil(gateway, basketId, try Self.ticketText(joined), "admitted")
        let admission = try #require(admitted.json?["admissionToken"]?.stringValue)
        let expiresAt = admitted.json?["admissionExpiresAt"]?.stringValue
        for index in 0..<3 { _ = try await Self.join(gateway, basketId, "other\(index)") }
        // Later joiners never lengthen (or shorten) an admission that is running.
        let still = try await Self.poll(gateway, basketId, try Self.ticketText(joined))
        if still.json?["state"]?.stringValue == "admitted" { #expect(still.json?["admissionExpiresAt"]?.stringValue == expiresAt) }
        _ = try await Self.pollUntil(gateway, basketId, try Self.ticketText(joined), "expired")
        ContractErrorTests.expectError(try await Self.reserve(gateway, basketId, "slow", admission: admission), 403, "admission_required")
        let again = try await Self.join(gateway, basketId, "slow")
        let second = try Self.ticket(again)
        #expect(second.join > first.join + 3, "at the back: \(first.join) then \(second.join)")
        let state = again.json?["state"]?.stringValue
        #expect(state == "waiting" || state == "admitted", "\(again.text)")
        await gateway.stop()
    }

    @Test("token mode: the room knows the consumer from the token; another consumer's ticket is 404; no token is 401")
    func tokenMode() async throws {
        let gateway = try await ConsumerTokenModeTests.start()
        let basketId = TestEnvironment.uniqueId("wr-tok")
        try await Self.create(gateway, basketId, perMinute: 1_000_000)
        let alice = ConsumerTokenModeTests.bearer(try ConsumerTokenModeTests.token("alice"))
        let bob = ConsumerTokenModeTests.bearer(try ConsumerTokenModeTests.token("bob"))
        let joined = try await gateway.request(.POST, "/v1/baskets/\(basketId)/queue", headers: alice)
        #expect(joined.status == 200, "\(joined.text)")
        #expect(try Self.ticket(joined).consumerId == "alice")
        let ticket = try Self.ticketText(joined)
        ContractErrorTests.expectError(try await Self.join(gateway, basketId, "bob", headers: alice), 403, "consumer_mismatch")
        ContractErrorTests.expectError(try await gateway.request(.POST, "/v1/baskets/\(basketId)/queue"), 401, "invalid_token")
        ContractErrorTests.expectError(try await Self.poll(gateway, basketId, ticket), 401, "invalid_token")
        ContractErrorTests.expectError(try await Self.poll(gateway, basketId, ticket, headers: bob), 404, "ticket_not_found")
        var view = try await Self.poll(gateway, basketId, ticket, headers: alice)
        let reached = try await eventually {
            view = try await Self.poll(gateway, basketId, ticket, headers: alice)
            return view.json?["state"]?.stringValue == "admitted"
        }
        #expect(reached, "\(view.text)")
        let admission = try #require(view.json?["admissionToken"]?.stringValue)
        // Bob cannot use Alice's admission; Alice can.
        let stolen = try await gateway.request(
            .POST, "/v1/baskets/\(basketId)/reservations", headers: bob + [("Admission-Token", admission)], body: Array("{}".utf8))
        ContractErrorTests.expectError(stolen, 403, "admission_required")
        let reserved = try await gateway.request(
            .POST, "/v1/baskets/\(basketId)/reservations", headers: alice + [("Admission-Token", admission)], body: Array("{}".utf8))
        #expect(reserved.status == 201 && reserved.json?["consumerId"]?.stringValue == "alice")
        await gateway.stop()
    }

    @Test("a room and its members expire a week after closesAt, and follow a PATCH that moves or removes it")
    func roomExpiry() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("wr-ttl")
        let partition = Keyspace.partition(ofBasket: basketId)
        let keys = [Keyspace.room(basketId: basketId, partition: partition), Keyspace.queue(basketId: basketId, partition: partition)]
        func ttls() async throws -> [Int] {
            var values: [Int] = []
            for key in keys { values.append(try await gateway.redis.send("PTTL", .string(key)).int ?? -99) }
            return values
        }
        let week = 604_800_000
        try await Self.create(gateway, basketId, perMinute: 60, ["closesAt": .string(Self.iso(Self.now + 3_600_000))])
        _ = try await Self.join(gateway, basketId, "alice")
        for ttl in try await ttls() { #expect(ttl > week && ttl <= week + 3_600_000, "\(ttl)") }
        let later = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin,
            body: HTTPTestClient.json(["closesAt": .string(Self.iso(Self.now + 30 * 86_400_000))]))
        #expect(later.status == 200)
        for ttl in try await ttls() { #expect(ttl > week + 29 * 86_400_000, "moved with closesAt: \(ttl)") }
        let removed = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(["closesAt": .null]))
        #expect(removed.status == 200)
        #expect(try await ttls() == [-1, -1], "no closing time: kept")
        await gateway.stop()
    }

    @Test("waitingRoom on PUT and PATCH: out of range or ill-typed is 400; the view shows it")
    func roomSettings() async throws {
        let gateway = try await GatewayHarness.start()
        for bad in [
            #"{"admitPerMinute":0}"#, #"{"admitPerMinute":1000001}"#, #"{"admitPerMinute":5,"admissionSeconds":29}"#,
            #"{"admitPerMinute":5,"admissionSeconds":3601}"#, #"{"admissionSeconds":60}"#, #""fast""#, "5", #"{"admitPerMinute":"5"}"#,
            #"{"admitPerMinute":5.5}"#,
        ] {
            let put = try await gateway.request(
                .PUT, "/v1/baskets/\(TestEnvironment.uniqueId("wr-bad"))", headers: gateway.admin,
                body: HTTPTestClient.json(["stock": 1, "waitingRoom": .raw(bad)]))
            ContractErrorTests.expectError(put, 400, "invalid_request")
        }
        let basketId = TestEnvironment.uniqueId("wr-set")
        let created = try await Self.create(gateway, basketId, perMinute: 120)
        #expect(created.json?["waitingRoom"]?["admitPerMinute"]?.int == 120 && created.json?["waitingRoom"]?["admissionSeconds"]?.int == 300)
        let patched = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin,
            body: HTTPTestClient.json(["waitingRoom": .raw(#"{"admitPerMinute":30,"admissionSeconds":60}"#)]))
        #expect(patched.json?["waitingRoom"]?["admitPerMinute"]?.int == 30 && patched.json?["waitingRoom"]?["admissionSeconds"]?.int == 60)
        let badPatch = try await gateway.request(
            .PATCH, "/v1/baskets/\(basketId)", headers: gateway.admin, body: HTTPTestClient.json(["waitingRoom": .raw(#"{"admitPerMinute":-1}"#)]))
        ContractErrorTests.expectError(badPatch, 400, "invalid_request")
        await gateway.stop()
    }
}
