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

    /// A record from a row read with `select`; nil if Postgres holds something the domain rejects.
    static func record(_ row: PostgresRow) -> ReservationRecord? {
        ReservationRecord { row[$0.rawValue].string }
    }
}
