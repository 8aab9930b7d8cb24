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
        arguments: ["abc", "1.5", "9223372036854775807", "", "(the hash replaced by a string)"])
    func unreadableCountsFailClosed(count: String) async throws {
        let wrongType = count.hasPrefix("(")
        for coalesced in [false, true] {
            let (basketId, partition) = try await newBasket(stock: 5, max: 1)
            let units = Keyspace.consumerUnits(basketId: basketId, partition: partition)
            if wrongType {
                _ = try await redis.send("SET", .string(units), "not a hash")
            } else {
                _ = try await redis.send("HSET", .string(units), "mallory", .string(count))
            }
            // mallory's with an Idempotency-Key: a refusal for a corrupt store is not its answer for good
            let key = TestEnvironment.uniqueId("key")
            let calls = ["mallory", "alice"].map { consumer in
                ReserveCall(
                    basketId: basketId, consumerId: consumer, quantity: 1, reservationId: ids.next(partition: partition), attemptsPerSecond: 0,
                    idempotencyKey: consumer == "mallory" ? key : nil)
            }
            let outcomes: [ReserveCall.Outcome]
            if coalesced {
                outcomes = try await redis.run(ReserveBatchCall(calls)).map { try $0.get() }
            } else {
                outcomes = [try await redis.run(calls[0]), try await redis.run(calls[1])]
            }
            // (it answered a script error: 500, and left no mark)
            #expect(outcomes.count == 2 && outcomes[0] == .unavailable, "\(count), coalesced \(coalesced): \(outcomes)")
            let health = try await redis.run(BasketHealthCall(basketId: basketId))
            if wrongType {
                #expect(outcomes.count == 2 && outcomes[1] == .unavailable, "nobody's count can be kept: \(outcomes)")
                #expect(health.booksMismatches == 2, "marked once per request")
                _ = try await redis.send("DEL", .string(units))
            } else {
                guard outcomes.count == 2, case .granted = outcomes[1] else {
                    Issue.record("another consumer is served: \(outcomes)")
                    continue
                }
                #expect(try await redis.send("HGET", .string(units), "mallory").string == count, "left for the repair to rewrite")
                #expect(health.booksMismatches == 1, "the basket is marked, so the audit finds it and repairs it")
                _ = try await redis.send("HDEL", .string(units), "mallory")
            }
            // once the count is repaired, the same request with the same key is served
            guard case .granted = try await redis.run(calls[0]) else {
                Issue.record("\(count): the key kept the refusal")
                continue
            }
        }
    }

    @Test(
        "a basket counter the scripts cannot read is not served and marks the basket (alone and coalesced), so the audit finds it",
        arguments: [("stock", "+7"), ("hold", "+600"), ("max", "+1"), ("seq", "+9"), ("seq", "1000000000000000"), ("pending", "")])
    func unreadableCounterMarks(field: String, value: String) async throws {
        let (basketId, partition) = try await newBasket(stock: 5, max: 1)
        let key = Keyspace.basket(basketId, partition: partition)
        let good = try await redis.send("HGET", .string(key), .string(field))
        if value.isEmpty {
            _ = try await redis.send("HDEL", .string(key), .string(field))
        } else {
            _ = try await redis.send("HSET", .string(key), .string(field), .string(value))
        }
        let idempotencyKey = TestEnvironment.uniqueId("key")
        #expect(try await reserve(basketId, "alice", key: idempotencyKey) == .unavailable)
        #expect(try await redis.run(BasketHealthCall(basketId: basketId)).booksMismatches == 1, "\(field)=\(value)")
        let batch = try await redis.run(
            ReserveBatchCall(
                ["bob", "carol"].map {
                    ReserveCall(
                        basketId: basketId, consumerId: $0, quantity: 1, reservationId: ids.next(partition: partition), attemptsPerSecond: 0,
                        idempotencyKey: nil)
                }))
        #expect(batch.count == 2 && batch.allSatisfy { (try? $0.get()) == .unavailable }, "coalesced too: \(batch)")
        #expect(try await redis.run(BasketHealthCall(basketId: basketId)).booksMismatches == 3, "once per request")
        // the counter put right, the same key is served (the refusal was not stored)
        _ = try await redis.send("HSET", .string(key), .string(field), .string(try #require(good.string)))
        guard case .granted = try await reserve(basketId, "alice", key: idempotencyKey) else {
            Issue.record("\(field): the key kept the refusal")
            return
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

extension ScriptOutcomeTests {
    /// What a corruption of the store leaves a release to do: each case names what it breaks.
    enum ReleaseCorruption: String, CaseIterable {
        case unitsNotANumber, unitsTooLong, unitsNotAHash, stockUnreadable, pendingFraction, seqUnreadable, holdsNotASortedSet,
            streamNotAStream
    }

    @Test(
        "cancel and expiry on a corrupt store give nothing back, however often retried (they gave the units back on every try), and mark the basket")
    func releaseOnACorruptStore() async throws {
        // A Redis of its own: the partition's holds and stream are replaced by strings.
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        defer { server.stop() }
        let redis = RedisClient(configuration: try RedisConfiguration(url: server.url), eventLoopGroup: TestEnvironment.eventLoopGroup)
        try await redis.load(ReservationScripts.all)
        for corruption in ReleaseCorruption.allCases {
            let basketId = TestEnvironment.uniqueId("rc")
            let partition = Keyspace.partition(ofBasket: basketId)
            _ = try await redis.run(CreateBasketCall(basketId: basketId, stock: 5, holdSeconds: 600, maxPerConsumer: 5))
            let reserved = try await redis.run(
                ReserveCall(
                    basketId: basketId, consumerId: "alice", quantity: 2, reservationId: ids.next(partition: partition), attemptsPerSecond: 0,
                    idempotencyKey: nil))
            let id = try grantedId(reserved)
            let basketKey = Keyspace.basket(basketId, partition: partition)
            let units = Keyspace.consumerUnits(basketId: basketId, partition: partition)
            let holds = Keyspace.holds(partition)
            let stream = Keyspace.stream(partition)
            let eventsBefore = try await redis.send("XLEN", .string(stream)).int
            var setAside: String?
            switch corruption {
            case .unitsNotANumber: _ = try await redis.send("HSET", .string(units), "alice", "abc")
            case .unitsTooLong: _ = try await redis.send("HSET", .string(units), "alice", "9223372036854775807")
            case .unitsNotAHash:
                _ = try await redis.send("DEL", .string(units))
                _ = try await redis.send("SET", .string(units), "not a hash")
            case .stockUnreadable: _ = try await redis.send("HSET", .string(basketKey), "stock", "x")
            case .pendingFraction: _ = try await redis.send("HSET", .string(basketKey), "pending", "2.5")
            case .seqUnreadable: _ = try await redis.send("HSET", .string(basketKey), "seq", "x")
            case .holdsNotASortedSet, .streamNotAStream:
                let key = corruption == .holdsNotASortedSet ? holds : stream
                setAside = key
                _ = try await redis.send("RENAME", .string(key), .string(key + ":aside"))
                _ = try await redis.send("SET", .string(key), "not a sorted set nor a stream")
            }
            let target = ReleaseTarget(reservationId: id, basketId: basketId, consumerId: "alice")
            for attempt in 1...3 {
                #expect(try await redis.run(CancelReservationCall(target, partition: partition)) == .unavailable, "\(corruption), try \(attempt)")
            }
            // The hold ran out: expiry rounds keep it for later instead of giving its units back.
            _ = try await redis.send(
                "HSET", .string(Keyspace.reservation(id, partition: partition)), "exp", .int(Int(WallClock.nowMilliseconds() - 60_000)))
            if corruption != .holdsNotASortedSet {
                for _ in 1...2 {
                    let expiry = try await redis.run(ExpireHoldsCall([target], partition: partition))
                    #expect(expiry.expired == 0 && expiry.kept == 1, "\(corruption): \(expiry)")
                }
            }
            #expect(try await redis.run(CancelReservationCall(target, partition: partition)) == .unavailable, "\(corruption): an expiring cancel")
            if let setAside {
                _ = try await redis.send("DEL", .string(setAside))
                _ = try await redis.send("RENAME", .string(setAside + ":aside"), .string(setAside))
            }
            let fields = try await redis.send("HMGET", .string(basketKey), "stock", "pending", "mismatch").array?.map(\.string)
            #expect(fields?[0] == (corruption == .stockUnreadable ? "x" : "3"), "\(corruption): no unit given back: \(String(describing: fields))")
            #expect(fields?[1] == (corruption == .pendingFraction ? "2.5" : "2"), "\(corruption): \(String(describing: fields))")
            // (a cancel, two expiry rounds, one expiring cancel: 3 + 2 + 1 marks, 3 + 1 without holds)
            let marks = corruption == .holdsNotASortedSet ? "4" : "6"
            #expect(fields?[2] == marks, "\(corruption): the basket is marked for the audit each time: \(String(describing: fields))")
            #expect(try await redis.run(ReadReservationCall(reservationId: id, partition: partition))?.status == .pending, "\(corruption)")
            #expect(try await redis.send("ZSCORE", .string(holds), .string(id)).isNull == false, "\(corruption): the hold is kept")
            #expect(try await redis.send("XLEN", .string(stream)).int == eventsBefore, "\(corruption): no event")
            if corruption == .unitsNotANumber {
                // Repaired by hand, the same cancel gives the units back once.
                _ = try await redis.send("HSET", .string(units), "alice", "2")
                _ = try await redis.send(
                    "HSET", .string(Keyspace.reservation(id, partition: partition)), "exp", .int(Int(WallClock.nowMilliseconds() + 600_000)))
                guard case .cancelled = try await redis.run(CancelReservationCall(target, partition: partition)) else {
                    Issue.record("not cancelled once repaired")
                    continue
                }
                #expect(try await redis.run(ReadBasketCall(basketId: basketId))?.stock == 5)
                #expect(try await redis.send("HGET", .string(units), "alice").isNull)
                #expect(try await redis.send("XLEN", .string(stream)).int == (eventsBefore ?? 0) + 1)
            }
        }
    }
}

extension ScriptOutcomeTests {
    @Test(
        "repair_basket on a wrong-typed partition key writes nothing: the basket stays in maintenance, its counters untouched (it put it back on sale half repaired)",
        arguments: ["index", "lost", "stream"])
    func repairBasketFailsWhole(key corrupted: String) async throws {
        // A Redis of its own: a key of the partition is replaced by a string.
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        defer { server.stop() }
        let redis = RedisClient(configuration: try RedisConfiguration(url: server.url), eventLoopGroup: TestEnvironment.eventLoopGroup)
        try await redis.load(ReservationScripts.all)
        let basketId = TestEnvironment.uniqueId("rb")
        let partition = Keyspace.partition(ofBasket: basketId)
        _ = try await redis.run(CreateBasketCall(basketId: basketId, stock: 5, holdSeconds: 600, maxPerConsumer: 5))
        #expect(try await redis.run(RepairLeaseCall(basketId: basketId, mode: .acquire, lease: Self.lease)) == .acquired)
        let keys = ["index": Keyspace.basketIndex(partition), "lost": Keyspace.lostBaskets(partition), "stream": Keyspace.stream(partition)]
        let key = try #require(keys[corrupted])
        let lost = Keyspace.lostBaskets(partition)
        _ = try await redis.send("SADD", .string(lost), .string(basketId))  // (every key to set aside exists)
        let events = try await redis.send("XLEN", .string(Keyspace.stream(partition))).int
        _ = try await redis.send("RENAME", .string(key), .string(key + ":aside"))
        _ = try await redis.send("SET", .string(key), "not a set nor a stream")
        let state = BasketState(stock: 3, pending: 2, confirmed: 0, capacity: 5, holdSeconds: 600, maxPerConsumer: 5)
        await #expect(throws: (any Error).self) {
            try await redis.run(RepairBasketCall(basketId: basketId, state: state, seq: 10, reason: "counters", lease: Self.lease))
        }
        let basket = Keyspace.basket(basketId, partition: partition)
        #expect(try await redis.send("HGET", .string(basket), "maint").string == Self.lease.token, "still in maintenance")
        #expect(try await redis.send("HGET", .string(basket), "stock").string == "5", "nothing of the repair written")
        if corrupted != "lost" {
            #expect(try await redis.send("SISMEMBER", .string(lost), .string(basketId)).int == 1, "still named lost")
        }
        _ = try await redis.send("DEL", .string(key))
        _ = try await redis.send("RENAME", .string(key + ":aside"), .string(key))
        #expect(try await redis.send("XLEN", .string(Keyspace.stream(partition))).int == events, "no event")
        #expect(try await redis.run(RepairBasketCall(basketId: basketId, state: state, seq: 10, reason: "counters", lease: Self.lease)) == .done)
        #expect(try await redis.send("HMGET", .string(basket), "stock", "maint").array?.map(\.string) == ["3", nil])
        #expect(try await redis.send("SISMEMBER", .string(lost), .string(basketId)).int == 0)
    }

    @Test("cancel reads counters with leading zeros (which HINCRBY refuses) and gives the units back exactly once, written canonically")
    func releaseLeadingZeros() async throws {
        for (field, value) in [("units", "02"), ("pending", "02"), ("stock", "003"), ("seq", "01")] {
            let (basketId, partition) = try await newBasket(stock: 5, max: 5)
            let id = try grantedId(try await reserve(basketId, "alice", quantity: 2))
            let basketKey = Keyspace.basket(basketId, partition: partition)
            let units = Keyspace.consumerUnits(basketId: basketId, partition: partition)
            if field == "units" {
                _ = try await redis.send("HSET", .string(units), "alice", .string(value))
            } else {
                _ = try await redis.send("HSET", .string(basketKey), .string(field), .string(value))
            }
            let target = ReleaseTarget(reservationId: id, basketId: basketId, consumerId: "alice")
            for _ in 1...3 {
                guard case .cancelled = try await redis.run(CancelReservationCall(target, partition: partition)) else {
                    Issue.record("\(field)=\(value): not cancelled")
                    break
                }
            }
            let fields = try await redis.send("HMGET", .string(basketKey), "stock", "pending").array?.map(\.string)
            #expect(fields == ["5", "0"], "\(field)=\(value): once, canonical: \(String(describing: fields))")
            #expect(try await redis.send("HGET", .string(units), "alice").isNull, "\(field)=\(value)")
        }
    }
}
