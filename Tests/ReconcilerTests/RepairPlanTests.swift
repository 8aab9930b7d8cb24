import ReconcilerCore
import ReservationCore
import Testing

/// The repair's decisions, from two snapshots alone: no server.
@Suite("Repair plan")
struct RepairPlanTests {
    static let basketId = "plan-basket"
    static let day = 86_400

    static func record(_ consumer: String, _ status: ReservationStatus, quantity: Int = 1, pay: String? = nil) -> ReservationRecord {
        ReservationRecord(
            basketId: basketId, consumerId: consumer, quantity: quantity, status: status, expiresAtMilliseconds: 1_700_000_000_000,
            paymentId: pay)
    }

    static let settings = BasketSettings(holdSeconds: 600, maxPerConsumer: 2)

    static func row(stock: Int, capacity: Int, seq: Int, rolledBack: Bool = false) -> BasketRow {
        BasketRow(
            id: basketId, stock: stock, capacity: capacity, settings: settings, settingsSeq: seq, redisSeq: seq, version: 3,
            rolledBack: rolledBack)
    }

    /// A basket of capacity 10 holding one pending and one confirmed unit, the same on both sides.
    static func agreeing() -> (RedisBasketSnapshot, PostgresBasketSnapshot) {
        let reservations = ["r1": record("a", .pending), "r2": record("b", .confirmed, pay: "p")]
        let redis = RedisBasketSnapshot(
            exists: true, stock: 8, pending: 1, confirmed: 1, capacity: 10, settings: settings, seq: 7,
            reservations: reservations, consumerUnits: ["a": 1, "b": 1])
        let postgres = PostgresBasketSnapshot(
            row: row(stock: 8, capacity: 10, seq: 7), reservations: reservations.mapValues { PostgresReservation(record: $0, ageSeconds: 5) },
            pendingUnits: 1, confirmedUnits: 1)
        return (redis, postgres)
    }

    @Test("both sides agreeing: nothing to repair, nothing written")
    func agreeingSides() throws {
        let (redis, postgres) = Self.agreeing()
        let plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(!plan.needsRepair, "\(plan.reasons)")
        #expect(plan.redisWrites.isEmpty && plan.postgresWrites.isEmpty)
    }

    @Test("each kind of difference is a reason: counters, units, a lost active reservation, a books mark, a seq gone backwards")
    func differences() throws {
        var (redis, postgres) = Self.agreeing()
        redis.stock = 9
        #expect(try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres).needsRepair)
        (redis, postgres) = Self.agreeing()
        redis.consumerUnits = ["a": 1]
        #expect(try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres).needsRepair)
        (redis, postgres) = Self.agreeing()
        redis.reservations["r1"] = nil
        let lost = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(lost.needsRepair && lost.redisWrites.map(\.id) == ["r1"] && lost.redisWrites[0].ttlSeconds == nil)
        (redis, postgres) = Self.agreeing()
        redis.booksMismatches = 1
        #expect(try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres).needsRepair)
        (redis, postgres) = Self.agreeing()
        redis.seq = 5
        let backwards = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(backwards.reasons.contains { $0.contains("went backwards") })
        #expect(backwards.seq == 8)
    }

    @Test("finished history: written back only within its retention and for the time left of it; older history never")
    func retention() throws {
        var (redis, postgres) = Self.agreeing()
        redis.exists = false
        redis.reservations = [:]
        postgres.reservations["recent"] = PostgresReservation(record: Self.record("c", .cancelled), ageSeconds: 6 * Self.day)
        postgres.reservations["edge"] = PostgresReservation(record: Self.record("d", .expired), ageSeconds: 7 * Self.day - 60)
        postgres.reservations["old"] = PostgresReservation(record: Self.record("e", .cancelled), ageSeconds: 30 * Self.day)
        let plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        let writes = Dictionary(uniqueKeysWithValues: plan.redisWrites.map { ($0.id, $0.ttlSeconds) })
        #expect(Set(writes.keys) == ["r1", "r2", "recent"])
        #expect(writes["recent"] == .some(Self.day))
        #expect(writes["r1"] == .some(nil) && writes["r2"] == .some(nil), "active ones are kept for good")
        #expect(plan.postgresWrites.isEmpty)
        #expect(plan.state == BasketState(stock: 8, pending: 1, confirmed: 1, capacity: 10, holdSeconds: 600, maxPerConsumer: 2))
    }

    @Test("capacity is never raised: a rolled-back Redis's larger capacity loses; with a rollback mark, the lower still wins")
    func capacity() throws {
        var (redis, postgres) = Self.agreeing()
        redis.capacity = 20
        redis.stock = 18
        let plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(plan.state.capacity == 10 && plan.state.stock == 8)
        // Postgres marked the basket rolled back: its capacity wins, and its oversell shows.
        (redis, postgres) = Self.agreeing()
        postgres.row = Self.row(stock: 8, capacity: 1, seq: 7, rolledBack: true)
        let rolledBack = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(rolledBack.needsRepair)
        #expect(rolledBack.state.capacity == 1 && rolledBack.state.stock == 0 && rolledBack.oversoldBy == 1)
        // Redis rolled back to 10, Postgres is at 5 and marked; then an operator lowered Redis
        // to 2: the decrease stands (the rollback mark never raises capacity).
        (redis, postgres) = Self.agreeing()
        redis.capacity = 2
        redis.stock = 0
        postgres.row = Self.row(stock: 3, capacity: 5, seq: 7, rolledBack: true)
        let lowered = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(lowered.state.capacity == 2 && lowered.state.stock == 0 && lowered.oversoldBy == 0)
    }

    @Test("hostile seqs: a corrupt Redis seq never traps (the repair numbers past Postgres's); a corrupt Postgres seq is an error")
    func hostileSeq() throws {
        var (redis, postgres) = Self.agreeing()
        redis.seq = nil  // what the snapshot makes of "9223372036854775807" or "abc"
        let plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(plan.needsRepair && plan.seq == 8)
        postgres.row = Self.row(stock: 8, capacity: 10, seq: .max)
        #expect(throws: RepairPlan.PlanError.self) { try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres) }
    }

    @Test("the union keeps the further status and a known payment id; a payment made while Redis had lost it confirms")
    func union() throws {
        var (redis, postgres) = Self.agreeing()
        redis.reservations["r1"] = Self.record("a", .cancelled)
        redis.pending = 0
        redis.stock = 9
        redis.consumerUnits = ["b": 1]
        redis.seq = 8
        var plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(plan.postgresWrites["r1"]?.status == .cancelled)
        #expect(plan.state.stock == 9 && plan.state.pending == 0)
        (redis, postgres) = Self.agreeing()
        postgres.paidWhileLost = ["r1": "late-pay"]
        plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(plan.postgresWrites["r1"]?.status == .confirmed && plan.postgresWrites["r1"]?.paymentId == "late-pay")
        #expect(plan.state.pending == 0 && plan.state.confirmed == 2)
    }

    @Test("Redis's own evidence: unbalanced counters, a books mark, a corrupt seq; a closed oversell is not")
    func redisEvidence() {
        var (redis, _) = Self.agreeing()
        #expect(RepairPlan.redisEvidence(redis).isEmpty)
        redis.stock = 58
        #expect(!RepairPlan.redisEvidence(redis).isEmpty)
        (redis, _) = Self.agreeing()
        redis.booksMismatches = 2
        #expect(!RepairPlan.redisEvidence(redis).isEmpty)
        (redis, _) = Self.agreeing()
        redis.seq = nil
        #expect(!RepairPlan.redisEvidence(redis).isEmpty)
        (redis, _) = Self.agreeing()
        redis.stock = 0
        redis.pending = 12
        #expect(RepairPlan.redisEvidence(redis).isEmpty, "an oversell kept closed is reported, not repaired again")
    }

    @Test("settings: Redis's when it has a readable basket; a basket Redis lost gets Postgres's window and pause; a difference is a reason")
    func settings() throws {
        let window = BasketSettings(
            holdSeconds: 300, maxPerConsumer: 3, opensAtMilliseconds: 1_900_000_000_000, closesAtMilliseconds: 1_900_000_600_000,
            paused: true)
        // Redis lost the basket: the row's settings are rebuilt into Redis.
        var (redis, postgres) = Self.agreeing()
        redis = RedisBasketSnapshot(exists: false, reservations: redis.reservations, consumerUnits: redis.consumerUnits)
        postgres.row?.settings = window
        var plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(plan.needsRepair && plan.state.settings == window)
        // Both readable and different (Postgres's paused changed by hand): Redis's stand, and
        // the difference alone needs a repair.
        (redis, postgres) = Self.agreeing()
        postgres.row?.settings.paused = true
        plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(plan.reasons == ["postgres settings differ"])
        #expect(plan.state.settings == Self.settings)
        // Redis has the newer window (a PATCH): it is what both sides get.
        (redis, postgres) = Self.agreeing()
        redis.settings = window
        plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(plan.state.settings == window && plan.reasons == ["postgres settings differ"])
        // Redis's settings unreadable (nil, or a hold of 0: a hash without them): Postgres's, and a reason.
        for unreadable in [nil, BasketSettings(holdSeconds: 0, maxPerConsumer: 1)] {
            (redis, postgres) = Self.agreeing()
            redis.settings = unreadable
            postgres.row?.settings = window
            plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
            #expect(plan.state.settings == window && plan.reasons.contains("redis settings are missing or malformed"))
        }
        // Postgres lost the row: created with Redis's settings, numbered by Redis's seq.
        (redis, postgres) = Self.agreeing()
        redis.settings = window
        postgres.row = nil
        plan = try RepairPlan.make(basketId: Self.basketId, redis: redis, postgres: postgres)
        #expect(plan.createRow?.settings == window && plan.createRow?.settingsSeq == 7)
    }

    @Test("a snapshot number is parsed with range checks")
    func parsing() {
        #expect(RedisBasketSnapshot.number("12", in: RepairPlan.counterRange) == 12)
        #expect(RedisBasketSnapshot.number("-1", in: RepairPlan.counterRange) == nil)
        #expect(RedisBasketSnapshot.number("9223372036854775807", in: RepairPlan.seqRange) == nil)
        #expect(RedisBasketSnapshot.number("99999999999999999999", in: RepairPlan.seqRange) == nil)
        #expect(RedisBasketSnapshot.number("1e3", in: RepairPlan.seqRange) == nil)
        // as the reserve scripts read counters: no sign, at most 15 digits
        for text in ["+5", "-0", " 5", "5 ", "", "1000000000000000", "999999999999999"] {
            #expect(RedisBasketSnapshot.number(text, in: RepairPlan.seqRange) == nil, "\(text)")
        }
        #expect(RedisBasketSnapshot.number("999999999999998", in: RepairPlan.seqRange) == 999_999_999_999_998)
        #expect(RedisBasketSnapshot.number("007", in: RepairPlan.counterRange) == 7)
    }
}
