public import ReservationCore

/// A repair in three parts, so its decisions are testable without servers: each side is read
/// into a snapshot (`BasketRepair.swift`), `RepairPlan.make` decides from the two snapshots alone
/// what to write where, and a small executor writes it.

/// Redis's side of one basket, every value parsed with range checks (a corrupt value is nil).
public struct RedisBasketSnapshot: Sendable, Equatable {
    /// The basket hash has a readable `stock` (false: missing, or its stock is corrupt).
    public var exists: Bool
    public var stock: Int?
    public var pending: Int?
    public var confirmed: Int?
    public var capacity: Int?
    /// The basket's settings; nil when one is missing or malformed (or its hold or limit does
    /// not fit Postgres's `integer`).
    public var settings: BasketSettings?
    /// nil when missing or outside `RepairPlan.seqRange`.
    public var seq: Int?
    /// The basket's reservations Redis holds, by id.
    public var reservations: [String: ReservationRecord]
    /// Units per consumer (`Keyspace.consumerUnits`); nil when a value is not a valid count.
    public var consumerUnits: [String: Int]?
    /// How often the reserve script found the books disagreeing (it then sells only what both
    /// agree on and marks the basket): a drift even once the counters read right again.
    public var booksMismatches: Int = 0

    public init(
        exists: Bool, stock: Int? = nil, pending: Int? = nil, confirmed: Int? = nil, capacity: Int? = nil,
        settings: BasketSettings? = nil, seq: Int? = nil, reservations: [String: ReservationRecord] = [:], consumerUnits: [String: Int]? = [:]
    ) {
        self.exists = exists
        self.stock = stock
        self.pending = pending
        self.confirmed = confirmed
        self.capacity = capacity
        self.settings = settings
        self.seq = seq
        self.reservations = reservations
        self.consumerUnits = consumerUnits
    }

    /// Parses a counter from Redis as the reserve scripts read it (1 to 15 digits: no sign, no
    /// `+`, which Swift's `Int(_:)` would take), within `range`.
    public static func number(_ text: String?, in range: ClosedRange<Int>) -> Int? {
        guard let text, let digits = Digits.decimal(text), case let value = Int(digits), range.contains(value) else { return nil }
        return value
    }
}

/// One reservation as Postgres holds it, and how long ago its row last changed.
public struct PostgresReservation: Sendable, Equatable {
    public var record: ReservationRecord
    public var ageSeconds: Int

    public init(record: ReservationRecord, ageSeconds: Int) {
        self.record = record
        self.ageSeconds = ageSeconds
    }
}

/// A webhook event-id claim to restore in Redis (SET NX), from `payments`.
public struct WebhookClaim: Sendable, Equatable {
    public var eventId: String
    public var reservationId: String
    public var outcome: String
    public var ageSeconds: Int

    public init(eventId: String, reservationId: String, outcome: String, ageSeconds: Int) {
        self.eventId = eventId
        self.reservationId = reservationId
        self.outcome = outcome
        self.ageSeconds = ageSeconds
    }
}

/// Postgres's side of one basket: only what can matter to Redis (active reservations, those
/// changed within the retention window, and any Redis still holds), never its whole history.
public struct PostgresBasketSnapshot: Sendable, Equatable {
    public var row: BasketRow?
    public var reservations: [String: PostgresReservation]
    /// The row's unit totals (`pending_units`, `confirmed_units`).
    public var pendingUnits: Int
    public var confirmedUnits: Int
    public var claims: [WebhookClaim]
    /// Payments that succeeded in time but found no reservation (Redis had lost it):
    /// reservation id -> payment id.
    public var paidWhileLost: [String: String]

    public init(
        row: BasketRow?, reservations: [String: PostgresReservation] = [:], pendingUnits: Int = 0, confirmedUnits: Int = 0,
        claims: [WebhookClaim] = [], paidWhileLost: [String: String] = [:]
    ) {
        self.row = row
        self.reservations = reservations
        self.pendingUnits = pendingUnits
        self.confirmedUnits = confirmedUnits
        self.claims = claims
        self.paidWhileLost = paidWhileLost
    }
}

/// What a repair writes, decided from the two snapshots alone.
public struct RepairPlan: Sendable, Equatable {
    /// Why the basket needs a repair; empty: both sides agree and nothing is written.
    public var reasons: [String]
    /// Postgres lost the basket row: created from Redis first.
    public var createRow: BasketRow?
    /// Reservations Postgres lacks or holds at a lesser status.
    public var postgresWrites: [String: ReservationRecord]
    /// Reservations Redis should hold and lacks or holds differently, with the TTL each should
    /// keep (nil: kept for good, as pending and confirmed ones are).
    public var redisWrites: [RedisWrite]
    public var claims: [WebhookClaim]
    public var state: BasketState
    public var seq: Int
    public var unitsByConsumer: [String: Int]
    public var oversoldBy: Int

    public struct RedisWrite: Sendable, Equatable {
        public var id: String
        public var record: ReservationRecord
        public var ttlSeconds: Int?
    }

    public var needsRepair: Bool { !reasons.isEmpty }

    /// Seqs beyond this are corrupt: the reserve scripts read at most 15 digits (and serve no
    /// basket whose seq has more), so a repair's seq, one past both sides, must stay within them.
    public static let seqRange = 0...999_999_999_999_998
    /// Counters and settings fit Postgres's `integer` columns.
    public static let counterRange = 0...Int(Int32.max)
    /// A finished reservation whose retention ends within this margin is not written back:
    /// Postgres's `updated_at` is a little later than the moment Redis started its TTL (the
    /// reconciler's lag), so near the end Redis may already have let it go.
    public static let retentionMarginSeconds = 300

    public enum PlanError: Error, Equatable, CustomStringConvertible {
        /// Postgres's own `redis_seq` is out of range: nothing sane to number the repair with.
        case corruptPostgresSeq(String, Int)

        public var description: String {
            switch self {
            case .corruptPostgresSeq(let id, let seq): return "basket \(id): postgres redis_seq \(seq) is out of range"
            }
        }
    }

    /// Drift Redis's snapshot shows on its own (its view is of one moment): a basket that is
    /// missing or unreadable, a corrupt seq, counters that do not balance (other than an
    /// oversell kept closed), or the reserve script's books mark.
    public static func redisEvidence(_ redis: RedisBasketSnapshot) -> [String] {
        guard redis.exists, let stock = redis.stock, let pending = redis.pending, let confirmed = redis.confirmed,
            let capacity = redis.capacity
        else { return ["redis has no readable basket"] }
        var reasons: [String] = []
        if redis.seq == nil { reasons.append("redis seq is missing or corrupt") }
        if redis.booksMismatches != 0 { reasons.append("the reserve script found the books disagreeing") }
        let held = Reconciler.units(pending, confirmed)
        let closedOversell = stock == 0 && held > capacity
        if Reconciler.units(stock, held) != capacity && !closedOversell {
            reasons.append("redis stock \(stock) + pending \(pending) + confirmed \(confirmed) != capacity \(capacity)")
        }
        return reasons
    }

    /// The plan for `basketId`. Rules:
    /// - reservations: the union of both sides, each field merged by its rule
    ///   (`ReservationField.merge`: the further status, a payment id once either knows it); Redis gets the active ones and the finished ones still within their
    ///   retention (with the TTL that is left), never older history;
    /// - capacity is never raised: the lower of the two when both are known (a rollback that
    ///   brought back an older, larger capacity loses to Postgres; a later decrease in Redis
    ///   stands), rolled back or not;
    /// - counters come from the union; an oversell leaves stock 0 and is reported, not hidden;
    /// - settings: Redis's when readable, else Postgres's (written to both sides);
    /// - `seq` moves past both sides, without overflow.
    public static func make(
        basketId: String, redis: RedisBasketSnapshot, postgres: PostgresBasketSnapshot,
        retentionSeconds: Int = Retention.finishedReservationSeconds
    ) throws -> RepairPlan {
        var reasons: [String] = []
        let row = postgres.row
        if let row, !seqRange.contains(row.redisSeq) { throw PlanError.corruptPostgresSeq(basketId, row.redisSeq) }

        var union: [String: ReservationRecord] = [:]
        for (id, reservation) in postgres.reservations { union[id] = reservation.record }
        for (id, record) in redis.reservations {
            guard let known = union[id] else {
                union[id] = record
                continue
            }
            // Field by field, by each field's merge rule (Postgres's account first).
            let disagreeing = ReservationField.allCases.filter { field in
                field.merge == .immutable && !known.value(of: field).isEmpty && !record.value(of: field).isEmpty
                    && known.value(of: field) != record.value(of: field)
            }
            if !disagreeing.isEmpty {
                reasons.append(
                    "reservation \(id): redis and postgres disagree on \(disagreeing.map(\.rawValue).joined(separator: ", ")) (postgres's kept)")
            }
            union[id] = known.merged(with: record)
        }
        // A payment that arrived in time while Redis had lost its reservation was answered
        // `unknown_reservation`; the reservation it paid for is confirmed instead of expiring.
        for (id, paymentId) in postgres.paidWhileLost {
            guard var record = union[id], record.status == .pending else { continue }
            record.status = .confirmed
            record.paymentId = record.paymentId ?? paymentId
            union[id] = record
            reasons.append("reservation \(id) was paid while redis had lost it")
        }

        let postgresWrites = union.filter { postgres.reservations[$0.key]?.record != $0.value }
        if !postgresWrites.isEmpty { reasons.append("postgres lacks \(postgresWrites.count) reservations or their latest status") }

        var redisWrites: [RedisWrite] = []
        var activeWrites = 0
        for (id, record) in union.sorted(by: { $0.key < $1.key }) where redis.reservations[id] != record {
            if record.status.isActive {
                redisWrites.append(RedisWrite(id: id, record: record, ttlSeconds: nil))
                activeWrites += 1
                continue
            }
            // Finished: only within its retention, and only for the time that is left of it.
            let age = postgres.reservations[id]?.ageSeconds ?? 0
            let (left, overflow) = retentionSeconds.subtractingReportingOverflow(max(age, 0))
            guard !overflow, left > retentionMarginSeconds else { continue }
            redisWrites.append(RedisWrite(id: id, record: record, ttlSeconds: left))
        }
        if activeWrites > 0 { reasons.append("redis lacks \(activeWrites) active reservations or their latest status") }
        // Finished ones missing from Redis are history: written back with a repair, never a reason for one.

        var units: [String: Int] = [:]
        var pending = 0
        var confirmed = 0
        for record in union.values where record.status.isActive {
            units[record.consumerId] = Reconciler.units(units[record.consumerId] ?? 0, record.quantity)
            if record.status == .pending {
                pending = Reconciler.units(pending, record.quantity)
            } else {
                confirmed = Reconciler.units(confirmed, record.quantity)
            }
        }

        var capacity: Int
        switch (redis.capacity, row) {
        // Always the lower: even after a rollback, a decrease an operator made in Redis since
        // then must stand.
        case (let redisCapacity?, let row?): capacity = min(redisCapacity, row.capacity)
        case (let redisCapacity?, nil): capacity = redisCapacity
        case (nil, let row?): capacity = row.capacity
        case (nil, nil): capacity = 0
        }
        capacity = max(capacity, 0)
        let held = Reconciler.units(pending, confirmed)
        let oversoldBy = held > capacity ? held - capacity : 0
        // Settings whole (`BasketSettingField.merge`): Redis's when it has a readable basket
        // with readable settings (it holds the latest PATCH), else Postgres's (a basket Redis lost
        // gets its window and pause back), else the defaults.
        let redisSettings = redis.exists ? redis.settings.flatMap { $0.holdSeconds > 0 ? $0 : nil } : nil
        let state = BasketState(
            stock: oversoldBy > 0 ? 0 : capacity - held, pending: pending, confirmed: confirmed, capacity: capacity,
            settings: redisSettings ?? row?.settings ?? BasketSettings(holdSeconds: 600, maxPerConsumer: 1))

        // Whether Redis's basket is what the union says it should be.
        if !redis.exists {
            reasons.append("redis has no readable basket")
        } else {
            if redis.seq == nil { reasons.append("redis seq is missing or corrupt") }
            if redis.booksMismatches != 0 { reasons.append("the reserve script found the books disagreeing") }
            let redisTuple = [redis.stock, redis.pending, redis.confirmed, redis.capacity]
            if redisTuple != [state.stock, state.pending, state.confirmed, state.capacity] {
                reasons.append(
                    "redis counters \(redisTuple.map { $0.map(String.init) ?? "?" }) differ from "
                        + "\([state.stock, state.pending, state.confirmed, state.capacity])")
            }
            if redis.consumerUnits != units.filter({ $0.value > 0 }) { reasons.append("redis consumer units differ") }
            if redisSettings == nil { reasons.append("redis settings are missing or malformed") }
        }
        if let row {
            if row.rolledBack { reasons.append("redis rolled back: an event reused a seq postgres had applied") }
            if let redisSeq = redis.seq, redisSeq < row.redisSeq {
                reasons.append("redis seq \(redisSeq) went backwards from postgres's \(row.redisSeq)")
            }
            if let redisSeq = redis.seq, redisSeq > row.redisSeq {
                // After the drain under the lease nothing is in flight: these events were lost.
                reasons.append("postgres missed events \(row.redisSeq + 1)...\(redisSeq)")
            }
            if [row.stock, postgres.pendingUnits, postgres.confirmedUnits, row.capacity]
                != [state.stock, state.pending, state.confirmed, state.capacity]
            {
                reasons.append("postgres counters differ")
            }
            if row.settings != state.settings { reasons.append("postgres settings differ") }
        } else if redis.exists {
            reasons.append("postgres has no basket row")
        }

        let createRow =
            row == nil && redis.exists
            ? BasketRow(
                id: basketId, stock: state.stock, capacity: state.capacity, settings: state.settings, settingsSeq: redis.seq ?? 0,
                redisSeq: redis.seq ?? 0, version: 1)
            : nil
        // Past both sides; both are within `seqRange`, so + 1 cannot overflow.
        let seq = max(redis.seq ?? 0, row?.redisSeq ?? 0) + 1
        return RepairPlan(
            reasons: reasons, createRow: createRow, postgresWrites: postgresWrites, redisWrites: redisWrites, claims: postgres.claims,
            state: state, seq: seq, unitsByConsumer: units.filter { $0.value > 0 }, oversoldBy: oversoldBy)
    }
}
