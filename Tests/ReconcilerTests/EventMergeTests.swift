import Foundation
import ReservationCore
import Testing

@testable import ReconcilerCore

/// The reconciler's event merge, without Postgres: whatever order a batch's entries come in,
/// each row gets its newest basket state and each reservation its furthest status.
@Suite("Event merge")
struct EventMergeTests {
    static func entry(_ fields: [String: String]) -> StreamEntry {
        StreamEntry(stream: "{rg00}:events", id: "1-0", fields: fields)
    }

    static let reserved = entry([
        "type": "reserved", "basket": "b", "seq": "2", "stock": "4", "capacity": "5", "res": "00-r", "consumer": "c", "qty": "1", "exp": "1000",
    ])
    static let paid = entry([
        "type": "payment", "event": "ev-1", "kind": "payment.succeeded", "res": "00-r", "payment": "p-1", "pay": "p-1",
        "amount": "500", "currency": "EUR", "outcome": "confirmed", "basket": "b", "seq": "3", "stock": "4", "capacity": "5",
        "consumer": "c", "qty": "1", "status": "confirmed", "exp": "1000",
    ])
    static let cancelled = entry([
        "type": "cancelled", "basket": "b", "seq": "4", "stock": "5", "capacity": "5", "res": "00-r", "consumer": "c", "qty": "1",
        "status": "cancelled", "exp": "1000", "from": "confirmed",
    ])

    @Test("in any order, a reservation ends at its furthest status, keeping its payment id; the basket at its newest seq")
    func anyOrder() {
        let entries = [Self.reserved, Self.paid, Self.cancelled]
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1], [0, 2, 1], [1, 2, 0]] {
            let changes = EventApplier.merge(order.map { entries[$0] })
            let record = changes.reservations["00-r"]
            #expect(record?.status == .cancelled, "\(order)")
            #expect(record?.paymentId == "p-1", "\(order)")
            #expect(changes.baskets["b"]?.seq == 4 && changes.baskets["b"]?.stock == 5, "\(order)")
            #expect(changes.payments.keys.sorted() == ["ev-1"])
        }
    }

    @Test("a reused seq from a newer stream entry is a rollback; a redelivery (older entry) is not; a corrupt seq changes no basket")
    func reusedSeq() {
        let row = BasketRow(
            id: "b", stock: 4, capacity: 5, settings: BasketSettings(holdSeconds: 600, maxPerConsumer: 1), redisSeq: 7, version: 3,
            redisEntry: "100-0")
        let redelivered = EventApplier.merge([StreamEntry(stream: "{rg00}:events", id: "90-0", fields: Self.reserved.fields)])
        #expect(!EventApplier.reusesSeq(redelivered.baskets["b"]?.seen ?? [], of: row))
        let reused = EventApplier.merge([StreamEntry(stream: "{rg00}:events", id: "200-0", fields: Self.reserved.fields)])
        #expect(EventApplier.reusesSeq(reused.baskets["b"]?.seen ?? [], of: row))
        var unknown = row
        unknown.redisEntry = nil
        #expect(!EventApplier.reusesSeq(reused.baskets["b"]?.seen ?? [], of: unknown), "no entry known (set by a repair): nothing to compare")
        var corrupt = Self.reserved.fields
        corrupt["seq"] = "9223372036854775807"
        #expect(EventApplier.merge([Self.entry(corrupt)]).baskets["b"] == nil)
    }

    @Test("settings merge by their own seq: every order of created(1), updated(5, a window), reserved(6) keeps seq 5's settings")
    func settingsLatestBySequence() {
        let settings = ["hold": "600", "max": "1", "opens": "", "closes": "", "paused": "0"]
        let created = Self.entry(
            ["type": "basket_created", "basket": "b", "seq": "1", "stock": "5", "capacity": "5", "at": "1"].merging(settings) { $1 })
        let window = BasketSettings(
            holdSeconds: 300, maxPerConsumer: 2, opensAtMilliseconds: 1_900_000_000_000, closesAtMilliseconds: 1_900_000_600_000,
            paused: true)
        let updated = Self.entry(
            ["type": "basket_updated", "basket": "b", "seq": "5", "stock": "5", "capacity": "5", "at": "5"].merging(
                Dictionary(uniqueKeysWithValues: BasketSettingField.allCases.map { ($0.rawValue, window.value(of: $0)) })
            ) { $1 })
        var reservedFields = Self.reserved.fields
        reservedFields["seq"] = "6"
        let reserved = Self.entry(reservedFields)
        let entries = [created, updated, reserved]
        for order in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let change = EventApplier.merge(order.map { entries[$0] }).baskets["b"]
            #expect(change?.seq == 6 && change?.stock == 4, "\(order)")
            #expect(change?.settings?.seq == 5 && change?.settings?.value == window, "\(order)")
        }
        // Alone, a reserved event carries no settings: the row's stay.
        #expect(EventApplier.merge([reserved]).baskets["b"]?.settings == nil)
    }

    @Test("a reserved event implies pending; an event without a valid reservation adds none")
    func impliedAndInvalid() {
        #expect(EventApplier.merge([Self.reserved]).reservations["00-r"]?.status == .pending)
        var broken = Self.reserved.fields
        broken["qty"] = "lots"
        #expect(EventApplier.merge([Self.entry(broken)]).reservations.isEmpty)
        // A payment written before `pay` existed still carries its id.
        var legacy = Self.paid.fields
        legacy["pay"] = nil
        #expect(EventApplier.merge([Self.entry(legacy)]).reservations["00-r"]?.paymentId == "p-1")
    }

    @Test("the upsert is generated from the fields' merge rules, and every column it names is made by a migration")
    func generatedUpsert() {
        let sql = ReservationColumns.upsert(arrays: 1 + ReservationField.allCases.count)
        // One rank CASE per side, from the one list of statuses, for the status's rule.
        #expect(sql.contains(ReservationColumns.statusRank("EXCLUDED.status") + " > " + ReservationColumns.statusRank("r.status")))
        #expect(sql.contains("payment_id = COALESCE(r.payment_id, EXCLUDED.payment_id)"))
        for status in ReservationStatus.allCases {
            #expect(ReservationColumns.statusRank("x").contains("WHEN '\(status.rawValue)' THEN \(status.rank)"))
        }
        // The statements of the migrations, comments left out: each column is made by the table's
        // CREATE TABLE or by an ALTER TABLE reservations ADD COLUMN.
        let statements = Migrator.migrations.flatMap { Migrator.statements($0.sql) }.map { statement in
            statement.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }.joined(separator: "\n")
        }
        let create = statements.first { $0.contains("CREATE TABLE reservations") } ?? ""
        for field in ReservationField.allCases {
            let column = ReservationColumns.column(field).name
            #expect(sql.contains("\(column) = "), "the upsert merges \(column)")
            let made =
                create.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces).hasPrefix(column + " ") }
                || statements.contains {
                    $0.contains("ALTER TABLE reservations")
                        && ($0.contains("ADD COLUMN \(column) ") || $0.contains("ADD COLUMN IF NOT EXISTS \(column) "))
                }
            #expect(made, "a migration makes the column \(column)")
        }
    }

    @Test("a batch merges each reservation field by field, whatever the order (a late field is learned, never lost)")
    func fieldByField() {
        // A cancelled event seen before the reserved one: the payment id known only to the payment event is kept.
        let changes = EventApplier.merge([Self.cancelled, Self.paid, Self.reserved])
        #expect(
            changes.reservations["00-r"]
                == ReservationRecord(
                    basketId: "b", consumerId: "c", quantity: 1, status: .cancelled, expiresAtMilliseconds: 1000, paymentId: "p-1"))
    }

    @Test("unit sums of counters read from outside saturate instead of trapping")
    func saturatingUnits() {
        #expect(Reconciler.units(2, 3, 4) == 9)
        #expect(Reconciler.units(Int.max, 1) == Int.max)
        #expect(Reconciler.units(Int.max, Int.max, -5) == Int.max - 5)
        #expect(Reconciler.units(Int.min, -1) == Int.min)
    }
}
