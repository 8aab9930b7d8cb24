import RedisClient
import ReservationCore
import ReservationScripts
import TestSupport
import Testing

/// Every outcome of every script, through its typed contract, against a real Redis: the other
/// half of the seam `ScriptContractTests` checks without one.
@Suite("Script outcomes against a real Redis")
struct ScriptOutcomeTests {
    let redis: RedisClient
    let ids = ReservationIdGenerator()

    init() async throws {
        redis = try await TestEnvironment.redisClient()
        try await redis.load(ReservationScripts.all)
    }

    func newBasket(stock: Int = 3, hold: Int = 600, max: Int = 2) async throws -> (String, Int) {
        let basketId = TestEnvironment.uniqueId("so")
        let created = try await redis.run(CreateBasketCall(basketId: basketId, stock: stock, holdSeconds: hold, maxPerConsumer: max))
        #expect(created == .created(BasketState(stock: stock, pending: 0, confirmed: 0, capacity: stock, holdSeconds: hold, maxPerConsumer: max)))
        return (basketId, Keyspace.partition(ofBasket: basketId))
    }

    func reserve(_ basketId: String, _ consumer: String, quantity: Int = 1, id: String? = nil, limit: Int = 0, key: String? = nil) async throws
        -> ReserveCall.Outcome
    {
        try await redis.run(
            ReserveCall(
                basketId: basketId, consumerId: consumer, quantity: quantity,
                reservationId: id ?? ids.next(partition: Keyspace.partition(ofBasket: basketId)), attemptsPerSecond: limit, idempotencyKey: key))
    }

    static let lease = RepairLease(token: "test-owner", milliseconds: 60_000)

    func maintenance(_ basketId: String, on: Bool) async throws {
        let outcome = try await redis.run(RepairLeaseCall(basketId: basketId, mode: on ? .acquire : .release, lease: Self.lease))
        #expect(outcome == (on ? .acquired : .released))
    }

    func grantedId(_ outcome: ReserveCall.Outcome) throws -> String {
        guard case .granted(let id, _, _) = outcome else { throw HarnessError("not granted: \(outcome)") }
        return id
    }

    @Test("basket_create and basket_adjust: every outcome")
    func baskets() async throws {
        let (basketId, _) = try await newBasket(stock: 3)
        #expect(try await redis.run(CreateBasketCall(basketId: basketId, stock: 9, holdSeconds: 1, maxPerConsumer: 1)) == .exists)
        guard case .adjusted(let state) = try await redis.run(AdjustBasketCall(basketId: basketId, delta: 2, maxCapacity: 10)) else {
            Issue.record("adjust")
            return
        }
        #expect(state.stock == 5 && state.capacity == 5)
        #expect(try await redis.run(AdjustBasketCall(basketId: basketId, delta: -6, maxCapacity: 10)) == .insufficientStock)
        #expect(try await redis.run(AdjustBasketCall(basketId: basketId, delta: 6, maxCapacity: 10)) == .capacityExceeded)
        #expect(try await redis.run(AdjustBasketCall(basketId: TestEnvironment.uniqueId("none"), delta: 1, maxCapacity: 10)) == .basketNotFound)
        try await maintenance(basketId, on: true)
        #expect(try await redis.run(AdjustBasketCall(basketId: basketId, delta: 1, maxCapacity: 10)) == .unavailable)
        try await maintenance(basketId, on: false)
        #expect(try await redis.run(ReadBasketCall(basketId: basketId))?.stock == 5)
        #expect(try await redis.run(ReadBasketCall(basketId: TestEnvironment.uniqueId("none"))) == nil)
    }

    @Test("reserve: every outcome, and a replay answers the first answer")
    func reserveOutcomes() async throws {
        let (basketId, partition) = try await newBasket(stock: 3, max: 3)
        let first = try await reserve(basketId, "alice", key: "k1")
        let firstId = try grantedId(first)
        #expect(try await reserve(basketId, "alice", key: "k1") == first, "replay")
        #expect(try await reserve(basketId, "alice", quantity: 2, key: "k1") == .idempotencyKeyReused)
        #expect(try await reserve(basketId, "alice", limit: 1, key: "k1") == first, "a replay is answered before the rate limit")
        #expect(try await reserve(basketId, "alice", quantity: 3) == .limitExceeded)
        #expect(try await reserve(basketId, "bob", quantity: 3) == .soldOut)
        let refusedWithKey = try await reserve(basketId, "bob", quantity: 3, key: "k2")
        #expect(refusedWithKey == .soldOut)
        #expect(try await reserve(basketId, "bob", quantity: 3, key: "k2") == .soldOutReplayed, "a refusal replays too (marked as a replay)")
        // Refusals take back the units they counted: alice still holds 1, bob has no entry.
        let units = try await redis.send("HGETALL", .string(Keyspace.consumerUnits(basketId: basketId, partition: partition)))
        #expect(units == .array([.bulk(Array("alice".utf8)), .bulk(Array("1".utf8))]))
        #expect(try await reserve(TestEnvironment.uniqueId("none"), "bob") == .basketNotFound)
        try await maintenance(basketId, on: true)
        #expect(try await reserve(basketId, "bob") == .unavailable)
        try await maintenance(basketId, on: false)
        let consumer = TestEnvironment.uniqueId("rl")
        _ = try await reserve(basketId, consumer, limit: 1)
        guard case .rateLimited(let wait) = try await reserve(basketId, consumer, limit: 1) else {
            // The 1 s window may have passed on a slow machine; the limit itself is what counts.
            return
        }
        #expect(wait >= 1 && wait <= 1000)
        let record = try await redis.run(ReadReservationCall(reservationId: firstId, partition: partition))
        #expect(record?.status == .pending && record?.consumerId == "alice" && record?.quantity == 1)
    }

    @Test("release: cancel's every outcome, and expire takes only what is due")
    func releaseOutcomes() async throws {
        let (basketId, partition) = try await newBasket(stock: 5, max: 5)
        let id = try grantedId(try await reserve(basketId, "alice", quantity: 2))
        let target = ReleaseTarget(reservationId: id, basketId: basketId, consumerId: "alice")
        #expect(
            try await redis.run(
                CancelReservationCall(ReleaseTarget(reservationId: id, basketId: basketId, consumerId: "mallory"), partition: partition))
                == .staleKeys)
        try await maintenance(basketId, on: true)
        #expect(try await redis.run(CancelReservationCall(target, partition: partition)) == .unavailable)
        try await maintenance(basketId, on: false)
        guard case .cancelled(let record) = try await redis.run(CancelReservationCall(target, partition: partition)) else {
            Issue.record("cancel")
            return
        }
        #expect(record.status == .cancelled && record.quantity == 2)
        #expect(try await redis.run(CancelReservationCall(target, partition: partition)) == .cancelled(record), "cancel twice: same answer")
        #expect(try await redis.run(ReadBasketCall(basketId: basketId))?.stock == 5, "units back exactly once")
        let missing = ReleaseTarget(reservationId: ids.next(partition: partition), basketId: basketId, consumerId: "x")
        #expect(try await redis.run(CancelReservationCall(missing, partition: partition)) == .reservationNotFound)

        // Expiry: one due hold, one not due; only the due one expires, and a cancel then says expired.
        let due = try grantedId(try await reserve(basketId, "bob"))
        let later = try grantedId(try await reserve(basketId, "carol"))
        let past = WallClock.nowMilliseconds() - 60_000
        _ = try await redis.send("HSET", .string(Keyspace.reservation(due, partition: partition)), "exp", .int(Int(past)))
        let targets = [
            ReleaseTarget(reservationId: due, basketId: basketId, consumerId: "bob"),
            ReleaseTarget(reservationId: later, basketId: basketId, consumerId: "carol"),
        ]
        #expect(try await redis.run(ExpireHoldsCall(targets, partition: partition)).expired == 1)
        #expect(try await redis.run(ExpireHoldsCall(targets, partition: partition)).expired == 0, "expires once")
        #expect(try await redis.run(CancelReservationCall(targets[0], partition: partition)) == .reservationExpired)
        #expect(try await redis.run(ReadReservationCall(reservationId: later, partition: partition))?.status == .pending)
        #expect(try await redis.run(ReadBasketCall(basketId: basketId))?.stock == 4)
        let units = try await redis.send("HGETALL", .string(Keyspace.consumerUnits(basketId: basketId, partition: partition)))
        #expect(units.array?.compactMap(\.string) == ["carol", "1"], "bob's units are gone, carol's stay")
    }

    @Test("payment: every outcome")
    func paymentOutcomes() async throws {
        let (basketId, partition) = try await newBasket(stock: 5, max: 5)
        let id = try grantedId(try await reserve(basketId, "alice"))
        func event(_ type: String = "payment.succeeded", reservation: String? = nil) -> PaymentCall.Event {
            PaymentCall.Event(
                eventId: TestEnvironment.uniqueId("ev"), type: type, reservationId: reservation ?? id,
                paymentId: "pay", amountCents: 100, currency: "EUR")
        }
        let paid = event()
        #expect(try await redis.run(PaymentCall(paid, partition: partition, basketId: "other")) == .staleKeys)
        #expect(try await redis.run(PaymentCall(paid, partition: partition, basketId: nil)) == .staleKeys)
        try await maintenance(basketId, on: true)
        #expect(try await redis.run(PaymentCall(paid, partition: partition, basketId: basketId)) == .unavailable)
        try await maintenance(basketId, on: false)
        #expect(try await redis.run(PaymentCall(paid, partition: partition, basketId: basketId)) == .processed(.confirmed))
        #expect(try await redis.run(PaymentCall(paid, partition: partition, basketId: basketId)) == .duplicate)
        #expect(try await redis.run(PaymentCall(event(), partition: partition, basketId: basketId)) == .processed(.refundRequired))
        #expect(try await redis.run(PaymentCall(event("payment.failed"), partition: partition, basketId: basketId)) == .processed(.failed))
        let unknown = event(reservation: ids.next(partition: partition))
        #expect(try await redis.run(PaymentCall(unknown, partition: partition, basketId: nil)) == .processed(.unknownReservation))
        let record = try await redis.run(ReadReservationCall(reservationId: id, partition: partition))
        #expect(record?.status == .confirmed && record?.paymentId == "pay")
        let basket = try await redis.run(ReadBasketCall(basketId: basketId))
        #expect(basket?.pending == 0 && basket?.confirmed == 1)
    }

    @Test("repair_reservations and repair_basket write what they are given and end maintenance")
    func repairOutcomes() async throws {
        let (basketId, partition) = try await newBasket(stock: 5, max: 5)
        try await maintenance(basketId, on: true)
        let pendingId = ids.next(partition: partition)
        let paidId = ids.next(partition: partition)
        let future = WallClock.nowMilliseconds() + 600_000
        let pending = ReservationRecord(
            basketId: basketId, consumerId: "a", quantity: 2, status: .pending, expiresAtMilliseconds: future, paymentId: nil)
        let paid = ReservationRecord(
            basketId: basketId, consumerId: "b", quantity: 1, status: .confirmed, expiresAtMilliseconds: future, paymentId: "p")
        let other = RepairLease(token: "someone-else", milliseconds: 60_000)
        #expect(
            try await redis.run(RepairReservationsCall([(pendingId, pending)], basketId: basketId, lease: other)) == .leaseLost,
            "fenced: a repair that does not own the basket writes nothing")
        #expect(try await redis.run(ReadReservationCall(reservationId: pendingId, partition: partition)) == nil)
        #expect(
            try await redis.run(RepairReservationsCall([(pendingId, pending), (paidId, paid)], basketId: basketId, lease: Self.lease)) == .done)
        #expect(try await redis.run(ReadReservationCall(reservationId: pendingId, partition: partition)) == pending)
        #expect(try await redis.run(ReadReservationCall(reservationId: paidId, partition: partition)) == paid)
        let holds = try await redis.send("ZSCORE", .string(Keyspace.holds(partition)), .string(pendingId))
        #expect(holds.int == Int(future))
        let state = BasketState(stock: 2, pending: 2, confirmed: 1, capacity: 5, holdSeconds: 600, maxPerConsumer: 5)
        let units = [(consumer: "a", units: 2), ("b", 1), ("gone", 0)]
        #expect(try await redis.run(RepairUnitsCall(basketId: basketId, units: units, first: true, lease: other)) == .leaseLost)
        #expect(try await redis.run(RepairUnitsCall(basketId: basketId, units: units, first: true, lease: Self.lease)) == .done)
        #expect(
            try await redis.run(RepairBasketCall(basketId: basketId, state: state, seq: 10, reason: "counters", lease: other))
                == .leaseLost)
        #expect(try await reserve(basketId, "c") == .unavailable, "still out of service: only the owner ends the repair")
        #expect(
            try await redis.run(
                RepairBasketCall(basketId: basketId, state: state, seq: 10, reason: "counters", lease: Self.lease))
                == .done)
        #expect(try await redis.run(ReadBasketCall(basketId: basketId)) == state)
        #expect(try await reserve(basketId, "c") != .unavailable, "back in service")
        let held = try await redis.send("HGET", .string(Keyspace.consumerUnits(basketId: basketId, partition: partition)), "a")
        #expect(held.int == 2)
    }

    @Test("repair_lease: one owner at a time; a run-out lease is taken over; only the owner releases")
    func leaseOutcomes() async throws {
        let (basketId, _) = try await newBasket(stock: 5, max: 5)
        let first = RepairLease(token: "first", milliseconds: 600_000)
        let second = RepairLease(token: "second", milliseconds: 600_000)
        #expect(try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: first)) == .acquired)
        #expect(try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: first)) == .acquired, "renewal")
        guard case .busy(let left) = try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: second)) else {
            Issue.record("a second repair got the basket")
            return
        }
        #expect(left > 0 && left <= 600_000)
        #expect(try await redis.run(RepairLeaseCall(basketId: basketId, mode: .release, lease: second)) == .lost)
        #expect(try await reserve(basketId, "c") == .unavailable)
        // The first owner's lease runs out (written here as already past): the second takes over,
        // and the first can no longer release or write.
        let key = Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId))
        _ = try await redis.send("HSET", .string(key), "lease", "1")
        #expect(try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: second)) == .acquired)
        #expect(try await redis.run(RepairLeaseCall(basketId: basketId, mode: .release, lease: first)) == .lost)
        #expect(try await reserve(basketId, "c") == .unavailable)
        #expect(try await redis.run(RepairLeaseCall(basketId: basketId, mode: .release, lease: second)) == .released)
        #expect(try await reserve(basketId, "c") != .unavailable)
        // A `maint` written before leases existed ("1", no lease) can be taken over.
        _ = try await redis.send("HSET", .string(key), "maint", "1")
        #expect(try await reserve(basketId, "d") == .unavailable)
        #expect(try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: first)) == .acquired)
    }

    @Test("reserve fails closed on a negative consumer count and an over-long window time, alone and coalesced")
    func corruptCountsFailClosed() async throws {
        for coalesced in [false, true] {
            let (basketId, partition) = try await newBasket(stock: 5, max: 1)
            let units = Keyspace.consumerUnits(basketId: basketId, partition: partition)
            _ = try await redis.send("HSET", .string(units), "mallory", "-3")
            let calls = ["mallory", "alice"].map { consumer in
                ReserveCall(
                    basketId: basketId, consumerId: consumer, quantity: 1, reservationId: ids.next(partition: partition), attemptsPerSecond: 0,
                    idempotencyKey: nil)
            }
            let outcomes: [ReserveCall.Outcome]
            if coalesced {
                outcomes = try await redis.run(ReserveBatchCall(calls)).map { try $0.get() }
            } else {
                outcomes = [try await redis.run(calls[0]), try await redis.run(calls[1])]
            }
            #expect(outcomes.count == 2 && outcomes[0] == .unavailable, "a negative count is not a way around the limit: \(outcomes)")
            guard case .granted = outcomes[1] else {
                Issue.record("another consumer is served: \(outcomes)")
                continue
            }
            #expect(try await redis.send("HGET", .string(units), "mallory").string == "-3", "the count is left for the repair to rewrite")
            let health = try await redis.run(BasketHealthCall(basketId: basketId))
            #expect(health.booksMismatches == 1, "the basket is marked, so the audit finds it and repairs it")
            let basketKey = Keyspace.basket(basketId, partition: partition)
            _ = try await redis.send("HSET", .string(basketKey), "opens", "123456789012345678901")
            #expect(try await reserve(basketId, "bob") == .unavailable, "a window time past 15 digits does not read")
            // 15 digits but past the year 9999: no basket has it; not served (it answered 500)
            _ = try await redis.send("HSET", .string(basketKey), "opens", "999999999999999")
            #expect(try await reserve(basketId, "bob") == .unavailable, "an opening time no basket can have is not served")
            let batch = try await redis.run(
                ReserveBatchCall([
                    ReserveCall(
                        basketId: basketId, consumerId: "bob", quantity: 1, reservationId: ids.next(partition: partition), attemptsPerSecond: 0,
                        idempotencyKey: nil),
                    ReserveCall(
                        basketId: basketId, consumerId: "carol", quantity: 1, reservationId: ids.next(partition: partition), attemptsPerSecond: 0,
                        idempotencyKey: nil),
                ]))
            #expect(batch.count == 2 && batch.allSatisfy { (try? $0.get()) == .unavailable }, "coalesced too: \(batch)")
        }
    }

    @Test(
        "reserve fails closed on a consumer count that is not an integer or would overflow, alone and coalesced, and marks the basket",
        arguments: ["abc", "1.5", "9223372036854775807", ""])
    func unreadableCountsFailClosed(count: String) async throws {
        for coalesced in [false, true] {
            let (basketId, partition) = try await newBasket(stock: 5, max: 1)
            let units = Keyspace.consumerUnits(basketId: basketId, partition: partition)
            _ = try await redis.send("HSET", .string(units), "mallory", .string(count))
            let calls = ["mallory", "alice"].map { consumer in
                ReserveCall(
                    basketId: basketId, consumerId: consumer, quantity: 1, reservationId: ids.next(partition: partition), attemptsPerSecond: 0,
                    idempotencyKey: nil)
            }
            let outcomes: [ReserveCall.Outcome]
            if coalesced {
                outcomes = try await redis.run(ReserveBatchCall(calls)).map { try $0.get() }
            } else {
                outcomes = [try await redis.run(calls[0]), try await redis.run(calls[1])]
            }
            // (it answered a script error: 500, and left no mark)
            #expect(outcomes.count == 2 && outcomes[0] == .unavailable, "\(count), coalesced \(coalesced): \(outcomes)")
            guard outcomes.count == 2, case .granted = outcomes[1] else {
                Issue.record("another consumer is served: \(outcomes)")
                continue
            }
            #expect(try await redis.send("HGET", .string(units), "mallory").string == count, "left for the repair to rewrite")
            let health = try await redis.run(BasketHealthCall(basketId: basketId))
            #expect(health.booksMismatches == 1, "the basket is marked, so the audit finds it and repairs it")
        }
    }

    @Test(
        "a mismatch mark the scripts cannot read stops the basket and reads as a mismatch to the audit",
        arguments: ["x", "", "1.5", "-1", "+1", "1234567890123456"])
    func unreadableMarkIsAMismatch(mark: String) async throws {
        let (basketId, partition) = try await newBasket(stock: 5, max: 1)
        _ = try await redis.send("HSET", .string(Keyspace.basket(basketId, partition: partition)), "mismatch", .string(mark))
        #expect(try await reserve(basketId, "alice") == .unavailable, "the scripts do not read it (fail closed)")
        let batch = try await redis.run(
            ReserveBatchCall([
                ReserveCall(
                    basketId: basketId, consumerId: "bob", quantity: 1, reservationId: ids.next(partition: partition), attemptsPerSecond: 0,
                    idempotencyKey: nil)
            ]))
        #expect(batch.count == 1 && batch.allSatisfy { (try? $0.get()) == .unavailable }, "coalesced too: \(batch)")
        // (the audit read it as 0 or -1: it never reported the basket, which answered 503 for good)
        #expect(try await redis.run(BasketHealthCall(basketId: basketId)).booksMismatches == 1)
    }

    @Test("reserve never sells more than capacity - pending - confirmed, and marks a basket whose books disagree")
    func booksCheck() async throws {
        let (basketId, partition) = try await newBasket(stock: 3, max: 10)
        let key = Keyspace.basket(basketId, partition: partition)
        // A corrupted counter: stock raised by 200 behind the scripts' back.
        _ = try await redis.send("HINCRBY", .string(key), "stock", 200)
        guard case .granted(_, _, let remaining) = try await reserve(basketId, "a", quantity: 2) else {
            Issue.record("not granted")
            return
        }
        #expect(remaining == 1, "sold from the books (3), not from the counter (203)")
        #expect(try await reserve(basketId, "b", quantity: 2) == .soldOut)
        #expect(try await reserve(basketId, "b", quantity: 1) != .soldOut)
        #expect(try await reserve(basketId, "c", quantity: 1) == .soldOut)
        let state = try await redis.run(ReadBasketCall(basketId: basketId))
        #expect(state?.stock == 0 && state?.pending == 3 && state?.capacity == 3)
        let health = try await redis.run(BasketHealthCall(basketId: basketId))
        #expect(health.booksMismatches >= 1, "marked for the audit")
    }
}

extension ScriptOutcomeTests {
    @Test("an idempotency record written before answers were arrays replays as the same answer")
    func legacyIdempotencyRecords() async throws {
        let (basketId, partition) = try await newBasket(stock: 3, max: 3)
        let record = Keyspace.idempotency(basketId: basketId, consumerId: "alice", key: "old", partition: partition)
        _ = try await redis.send("HSET", .string(record), "fp", "alice\n1", "answer", "granted|03-legacy|1700000000000|2")
        #expect(
            try await reserve(basketId, "alice", key: "old")
                == .granted(reservationId: "03-legacy", expiresAtMilliseconds: 1_700_000_000_000, remaining: 2))
        let refused = Keyspace.idempotency(basketId: basketId, consumerId: "bob", key: "old-refusal", partition: partition)
        _ = try await redis.send("HSET", .string(refused), "fp", "bob\n1", "answer", "sold_out")
        #expect(try await reserve(basketId, "bob", key: "old-refusal") == .soldOutReplayed)
        #expect(try await redis.run(ReadBasketCall(basketId: basketId))?.stock == 3, "replays reserve nothing")
    }
}
