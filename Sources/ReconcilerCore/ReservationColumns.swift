import PostgresClient
import ReservationCore

/// The reconciler's map between a reservation's fields (`ReservationField`, as Redis and the
/// events carry them) and the `reservations` table. One switch: a new field does not compile
/// until it has a column here.
enum ReservationColumns {
    struct Column {
        /// The column's name.
        var name: String
        /// SQL that reads the column back as the field's stored text.
        var read: String
        /// SQL that turns the field's text (`t.<field>` of an unnest of text arrays) into the column's value.
        var write: String
    }

    static func column(_ field: ReservationField) -> Column {
        switch field {
        case .basket: return Column(name: "basket_id", read: "basket_id", write: "t.basket")
        case .consumer: return Column(name: "consumer_id", read: "consumer_id", write: "t.consumer")
        case .qty: return Column(name: "quantity", read: "quantity::text", write: "t.qty::int")
        case .status: return Column(name: "status", read: "status", write: "t.status")
        case .exp:
            return Column(
                name: "expires_at",
                // An infinite or out-of-range time reads as NULL (a record the domain rejects,
                // reported with its id) instead of failing the whole statement.
                read: "(CASE WHEN isfinite(expires_at) AND abs(extract(epoch FROM expires_at)) < 1e14 "
                    + "THEN ((extract(epoch FROM expires_at) * 1000)::bigint)::text END)",
                write: "to_timestamp(t.exp::bigint / 1000.0)")
        case .pay: return Column(name: "payment_id", read: "COALESCE(payment_id, '')", write: "NULLIF(t.pay, '')")
        }
    }

    /// `SELECT` list that reads every field, named after it.
    static let select = ReservationField.allCases.map { "\(column($0).read) AS \($0.rawValue)" }.joined(separator: ", ")

    /// Column names, and the expressions that fill them from `unnest(...) AS t(id, <fields>)`.
    static let insertColumns = ReservationField.allCases.map { column($0).name }.joined(separator: ", ")
    static let insertValues = ReservationField.allCases.map { column($0).write }.joined(separator: ", ")
    static let unnestNames = ReservationField.allCases.map(\.rawValue).joined(separator: ", ")

    /// SQL of a status's rank (`ReservationStatus.rank`), from the one list of statuses.
    static func statusRank(_ expression: String) -> String {
        let cases = ReservationStatus.allCases.map { "WHEN '\($0.rawValue)' THEN \($0.rank)" }.joined(separator: " ")
        return "(CASE \(expression) \(cases) END)"
    }

    /// How an incoming row (`EXCLUDED`) meets the stored one (`r`) for one field, by its merge
    /// rule: the value to keep, and the condition under which the incoming row changes it.
    static func merge(_ field: ReservationField) -> (set: String, changes: String) {
        let name = column(field).name
        switch field.merge {
        case .immutable, .firstKnown:
            // The first known value stands; a row first made from an event that lacked it learns it.
            return ("\(name) = COALESCE(r.\(name), EXCLUDED.\(name))", "(r.\(name) IS NULL AND EXCLUDED.\(name) IS NOT NULL)")
        // (a reservation's later account is the one further on)
        case .furthestStatus, .latestBySequence:
            let further = "\(statusRank("EXCLUDED.\(name)")) > \(statusRank("r.\(name)"))"
            return ("\(name) = CASE WHEN \(further) THEN EXCLUDED.\(name) ELSE r.\(name) END", "(\(further))")
        }
    }

    /// The upsert of a batch of merged reservations: `$1` the ids, then one text array per field
    /// (`arrays` in all). Every column merges by its field's rule, so a redelivered or older
    /// event never takes a row back, and the row is touched only when something changes.
    static func upsert(arrays: Int) -> String {
        let placeholders = (1...arrays).map { "$\($0)::text[]" }.joined(separator: ", ")
        let rules = ReservationField.allCases.map(merge)
        return """
            INSERT INTO reservations AS r (id, \(insertColumns))
            SELECT t.id, \(insertValues)
            FROM unnest(\(placeholders)) AS t(id, \(unnestNames))
            ON CONFLICT (id) DO UPDATE
            SET \(rules.map(\.set).joined(separator: ", ")), updated_at = now()
            WHERE \(rules.map(\.changes).joined(separator: " OR "))
            """
    }

    /// A record from a row read with `select`; nil if Postgres holds something the domain rejects.
    static func record(_ row: PostgresRow) -> ReservationRecord? {
        ReservationRecord { row[$0.rawValue].string }
    }
}
