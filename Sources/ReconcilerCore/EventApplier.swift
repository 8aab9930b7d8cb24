public import PostgresClient
import ReservationCore

/// Turns a batch of stream entries into one Postgres transaction. Applying is idempotent and
/// order-proof, so a redelivered entry (crash between commit and XACK) or entries applied by two
/// reconcilers in any order leave the same rows:
/// - a reservation's status only moves forward (pending < confirmed < cancelled | expired);
/// - a payment is inserted once per event id (`ON CONFLICT (external_id) DO NOTHING`);
/// - a basket takes the absolute stock and capacity of the newest event (by the gateway's
///   per-basket `seq`), through `BasketStore.update` (optimistic locking), and its settings from
///   the newest event that carries them, if newer than the row's `settings_seq`.
public enum EventApplier {
    struct BasketChange {
        var seq: Int
        var stock: Int
        var capacity: Int
        /// The settings of the batch's settings-carrying event with the highest seq, and that
        /// seq: independent of which event is the newest overall (a newer `reserved` carries
        /// none), so an older event's settings are never lost to it.
        var settings: (seq: Int, value: BasketSettings)? = nil
        /// The stream entry that carried `seq`.
        var entry: StreamID? = nil
        /// Every (seq, entry) of the batch for this basket: a reused seq shows up among them.
        var seen: [(seq: Int, entry: StreamID)] = []
    }

    /// Whether one of `seen` reused a seq Postgres has applied from an older entry: a genuine
    /// event's seq and stream id grow together (one script bumps the one and XADDs the other),
    /// a redelivery has an entry no newer than the applied one, so only a Redis that lost data
    /// and numbered again produces this.
    static func reusesSeq(_ seen: [(seq: Int, entry: StreamID)], of row: BasketRow) -> Bool {
        guard let applied = row.redisEntry.flatMap(StreamID.init) else { return false }
        return seen.contains { $0.seq <= row.redisSeq && $0.entry > applied }
    }

    typealias PaymentRow = StoreEvent.Payment

    public struct Summary: Sendable, Equatable {
        public var entries = 0
        public var reservations = 0
        public var payments = 0
        public var baskets = 0
    }

    /// Applies `entries` in one transaction on `connection`.
    @discardableResult
    public static func apply(_ entries: [StreamEntry], on connection: PostgresConnection) throws -> Summary {
        let changes = merge(entries)
        try write(changes, on: connection)
        return Summary(
            entries: entries.count, reservations: changes.reservations.count, payments: changes.payments.count,
            baskets: changes.baskets.count)
    }

    /// What a batch of entries changes, one row per basket, reservation and payment.
    struct Changes {
        var baskets: [String: BasketChange] = [:]
        var reservations: [String: ReservationRecord] = [:]
        var payments: [String: PaymentRow] = [:]
    }

    /// Merges a batch into one change per row, without I/O: the newest basket state by `seq`,
    /// each reservation merged field by field by its rules (`ReservationField.merge`), and each
    /// payment event once.
    static func merge(_ entries: [StreamEntry]) -> Changes {
        var baskets: [String: BasketChange] = [:]
        var reservations: [String: ReservationRecord] = [:]
        var payments: [String: PaymentRow] = [:]

        for entry in entries {
            guard let event = StoreEvent(fields: entry.fields) else { continue }
            // A seq out of range is corrupt: it would number the row past any repair's reach.
            if let basketId = event.basketId, let basket = event.basket, RepairPlan.seqRange.contains(basket.seq) {
                let entryId = StreamID(entry.id)
                var change = BasketChange(
                    seq: basket.seq, stock: basket.stock, capacity: basket.capacity,
                    settings: basket.settings.map { (basket.seq, $0) }, entry: entryId)
                if let existing = baskets[basketId] {
                    let incoming = change.settings
                    if existing.seq > change.seq {
                        change = existing
                    }
                    change.seen = existing.seen
                    // Settings by their own seq (`BasketSettingField.merge`, latest by sequence).
                    change.settings = [existing.settings, incoming].compactMap { $0 }.max { $0.seq < $1.seq }
                }
                if let entryId { change.seen.append((basket.seq, entryId)) }
                baskets[basketId] = change
            }
            if let reservationId = event.reservationId, let record = event.reservation {
                reservations[reservationId] = reservations[reservationId].map { $0.merged(with: record) } ?? record
            }
            if let payment = event.payment {
                payments[payment.eventId] = payment
            }
        }

        return Changes(baskets: baskets, reservations: reservations, payments: payments)
    }

    /// Namespace of the per-basket advisory locks (the second key is `hashtext(basket id)`).
    static let basketLockNamespace: Int32 = 7_245

    /// Takes the transaction-scoped advisory lock of each basket, in id order: every writer of
    /// reservations does this first, so the triggers that keep `pending_units` and
    /// `confirmed_units` (migration 003) update basket rows in one order and never deadlock.
    static func lockBaskets(_ basketIds: Set<String>, on connection: PostgresConnection) throws {
        guard !basketIds.isEmpty else { return }
        try connection.execute(
            """
            SELECT pg_advisory_xact_lock($1::int, hashtext(ordered.id))
            FROM (SELECT id FROM unnest($2::text[]) AS t(id) ORDER BY id) AS ordered
            """, [.int(Int(basketLockNamespace)), .textArray(basketIds.sorted())])
    }

    /// Writes merged changes in one transaction: basket rows first (so the unit triggers find
    /// them), then reservations, then payments.
    static func write(_ changes: Changes, on connection: PostgresConnection) throws {
        let (baskets, reservations, payments) = (changes.baskets, changes.reservations, changes.payments)
        try connection.transaction { connection in
            try lockBaskets(Set(baskets.keys).union(reservations.values.map(\.basketId)), on: connection)
            // Sorted, so two reconcilers lock basket rows in the same order and cannot deadlock.
            for (basketId, change) in baskets.sorted(by: { $0.key < $1.key }) {
                let initial = BasketRow(
                    id: basketId, stock: change.stock, capacity: change.capacity,
                    settings: change.settings?.value ?? BasketSettings(holdSeconds: 600, maxPerConsumer: 1),
                    settingsSeq: change.settings?.seq ?? 0, redisSeq: change.seq, version: 1, redisEntry: change.entry?.description)
                try BasketStore.update(connection, basketId, create: initial) { row in
                    var next = row
                    if !row.rolledBack && reusesSeq(change.seen, of: row) {
                        // Never merged: Postgres keeps its stock and capacity (the audit reports
                        // the basket and a repair rebuilds it; capacity is never raised).
                        next.rolledBack = true
                    }
                    if change.seq > row.redisSeq {
                        if !next.rolledBack {
                            next.stock = change.stock
                            next.capacity = change.capacity
                        }
                        next.redisSeq = change.seq
                        next.redisEntry = change.entry?.description
                    } else if change.seq == row.redisSeq, row.redisEntry == nil {
                        next.redisEntry = change.entry?.description
                    }
                    // Only newer settings than the row's: a redelivered basket_created never takes
                    // a PATCHed window back.
                    if let settings = change.settings, settings.seq > row.settingsSeq {
                        next.settings = settings.value
                        next.settingsSeq = settings.seq
                    }
                    return next == row ? nil : next
                }
            }
            if !reservations.isEmpty {
                let ordered = reservations.sorted { $0.key < $1.key }
                // One text array per field (see ReservationColumns), cast to each column in SQL.
                var arrays: [PostgresValue] = [.textArray(ordered.map { $0.key })]
                for field in ReservationField.allCases {
                    arrays.append(.textArray(ordered.map { $0.value.value(of: field) }))
                }
                try connection.execute(ReservationColumns.upsert(arrays: arrays.count), arrays)
            }
            if !payments.isEmpty {
                let ordered = payments.sorted { $0.key < $1.key }.map(\.value)
                try connection.execute(
                    """
                    INSERT INTO payments (external_id, reservation_id, payment_id, amount_cents, currency, kind, outcome)
                    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[])
                    ON CONFLICT (external_id) DO NOTHING
                    """,
                    [
                        .textArray(ordered.map(\.eventId)), .textArray(ordered.map(\.reservationId)),
                        .textArray(ordered.map(\.paymentId)), .intArray(ordered.map(\.amountCents)),
                        .textArray(ordered.map(\.currency)), .textArray(ordered.map(\.kind)), .textArray(ordered.map(\.outcome)),
                    ])
            }
        }
    }
}
