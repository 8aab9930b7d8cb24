public import PostgresClient
public import ReservationCore

#if canImport(Glibc)
    import Glibc
#endif

/// A `baskets` row.
public struct BasketRow: Sendable, Equatable {
    public var id: String
    public var stock: Int
    public var capacity: Int
    /// Hold, limit, sale window and pause (`hold_seconds`, `max_per_consumer`, `opens_at`,
    /// `closes_at`, `paused`).
    public var settings: BasketSettings
    /// The seq of the event (or repair) that last set `settings`: only a newer one changes them.
    public var settingsSeq: Int
    public var redisSeq: Int
    public var version: Int
    /// The stream entry that carried `redisSeq` (nil: unknown, e.g. set by a repair).
    public var redisEntry: String? = nil
    /// An event reused a `seq` Postgres had seen (Redis rolled back): events no longer set
    /// stock and capacity until a repair rebuilds the basket.
    public var rolledBack: Bool = false

    public init(
        id: String, stock: Int, capacity: Int, settings: BasketSettings, settingsSeq: Int = 0, redisSeq: Int, version: Int,
        redisEntry: String? = nil, rolledBack: Bool = false
    ) {
        self.id = id
        self.stock = stock
        self.capacity = capacity
        self.settings = settings
        self.settingsSeq = settingsSeq
        self.redisSeq = redisSeq
        self.version = version
        self.redisEntry = redisEntry
        self.rolledBack = rolledBack
    }
}

public enum BasketStoreError: Error, Equatable, CustomStringConvertible {
    case notFound(String)
    case insufficientStock(String)
    case tooManyConflicts(String)
    /// A row the reconciler cannot read back (a constraint broken by hand): never skipped silently.
    case malformedRow(String)

    public var description: String {
        switch self {
        case .notFound(let id): return "basket \(id) does not exist in postgres"
        case .insufficientStock(let id): return "basket \(id) would fall below zero stock"
        case .tooManyConflicts(let id): return "basket \(id) kept changing under us; gave up after retries"
        case .malformedRow(let what): return "\(what) in postgres cannot be read back"
        }
    }
}

/// Every change to a `baskets` row goes through `update`: read the row and its `version`,
/// compute the new row, `UPDATE ... WHERE id = $1 AND version = $2`, and on a conflict (0 rows:
/// someone else changed it first) read again and retry, with a bounded, jittered backoff.
public enum BasketStore {
    static let maxAttempts = 30

    public static func read(_ connection: PostgresConnection, _ id: String) throws -> BasketRow? {
        let rows = try connection.query(
            "SELECT \(columns) FROM baskets WHERE id = $1", [.text(id)])
        return try rows.first.map(row)
    }

    /// A sale time column read back as ms text: "" when NULL (no time), NULL when infinite or out
    /// of range (malformed: `row` throws), as `ReservationColumns` reads `expires_at`.
    static func millisecondsText(_ column: String) -> String {
        "(CASE WHEN \(column) IS NULL THEN '' WHEN isfinite(\(column)) AND abs(extract(epoch FROM \(column))) < 1e14 "
            + "THEN ((extract(epoch FROM \(column)) * 1000)::bigint)::text END)"
    }

    /// The SQL that writes a sale time parameter (ms, NULL for none) into its column.
    static func timestamp(_ parameter: String) -> String { "to_timestamp(\(parameter)::bigint / 1000.0)" }

    /// The columns `row` reads.
    static let columns =
        "id, stock, capacity, hold_seconds, max_per_consumer, \(millisecondsText("opens_at")) AS opens_ms, "
        + "\(millisecondsText("closes_at")) AS closes_ms, paused, COALESCE(room_admit_per_minute::text, '') AS room_rate, "
        + "COALESCE(room_admission_seconds::text, '') AS room_secs, settings_seq, redis_seq, version, redis_entry, "
        + "(rolled_back_at IS NOT NULL) AS rolled_back"

    /// The stored text of one setting, as `BasketSettings` reads it, from a row read with `columns`.
    static func settingText(_ row: PostgresRow, _ field: BasketSettingField) -> String? {
        switch field {
        case .hold: return row["hold_seconds"].string
        case .max: return row["max_per_consumer"].string
        case .opens: return row["opens_ms"].string
        case .closes: return row["closes_ms"].string
        case .paused:
            switch row["paused"].string {
            case "t": return "1"
            case "f": return "0"
            default: return nil
            }
        case .roomRate: return row["room_rate"].string
        case .roomSeconds: return row["room_secs"].string
        }
    }

    /// A row read with `columns`. A value the domain rejects (a time out of range, a limit below
    /// one, set by hand) is `malformedRow`, never a default.
    static func row(_ row: PostgresRow) throws -> BasketRow {
        let id = row["id"].string ?? "?"
        // A time column reads "" for none: NULL here is a time out of range (`millisecondsText`).
        guard let stock = row["stock"].int, let capacity = row["capacity"].int, row["opens_ms"].string != nil,
            row["closes_ms"].string != nil, let settings = BasketSettings({ settingText(row, $0) }), let settingsSeq = row["settings_seq"].int,
            let redisSeq = row["redis_seq"].int, let version = row["version"].int
        else { throw BasketStoreError.malformedRow("basket \(id)") }
        return BasketRow(
            id: id, stock: stock, capacity: capacity, settings: settings, settingsSeq: settingsSeq, redisSeq: redisSeq, version: version,
            redisEntry: row["redis_entry"].string, rolledBack: row["rolled_back"].string == "t")
    }

    /// Optimistically changes one basket. `change` returns nil for "nothing to do". If the row does
    /// not exist and `create` is given, it is inserted first (ON CONFLICT DO NOTHING: a racing
    /// insert wins and we update that row instead). Returns the row as written, or as it was.
    @discardableResult
    public static func update(
        _ connection: PostgresConnection, _ id: String, create: BasketRow? = nil,
        _ change: (BasketRow) throws -> BasketRow?
    ) throws -> BasketRow {
        for attempt in 0..<maxAttempts {
            guard let current = try read(connection, id) else {
                guard let create else { throw BasketStoreError.notFound(id) }
                try connection.execute(
                    """
                    INSERT INTO baskets (id, stock, capacity, hold_seconds, max_per_consumer, opens_at, closes_at, paused,
                        room_admit_per_minute, room_admission_seconds, settings_seq, redis_seq, version, redis_entry)
                    VALUES ($1, $2, $3, $4, $5, \(timestamp("$6")), \(timestamp("$7")), $8, $9, $10, $11, $12, 1, $13)
                    ON CONFLICT (id) DO NOTHING
                    """,
                    [.text(id), .int(create.stock), .int(create.capacity)] + settingsParameters(create.settings)
                        + [.int(create.settingsSeq), .int(create.redisSeq), create.redisEntry.map { .text($0) } ?? .null])
                continue
            }
            guard var next = try change(current) else { return current }
            next.version = current.version + 1
            let changed = try connection.execute(
                """
                UPDATE baskets SET stock = $3, capacity = $4, hold_seconds = $5, max_per_consumer = $6,
                    opens_at = \(timestamp("$7")), closes_at = \(timestamp("$8")), paused = $9, room_admit_per_minute = $10,
                    room_admission_seconds = $11, settings_seq = $12, redis_seq = $13, version = $14, redis_entry = $15,
                    rolled_back_at = CASE WHEN $16::boolean THEN COALESCE(rolled_back_at, now()) END, updated_at = now()
                WHERE id = $1 AND version = $2
                """,
                [.text(id), .int(current.version), .int(next.stock), .int(next.capacity)] + settingsParameters(next.settings)
                    + [
                        .int(next.settingsSeq), .int(next.redisSeq), .int(next.version), next.redisEntry.map { .text($0) } ?? .null,
                        .bool(next.rolledBack),
                    ])
            if changed == 1 { return next }
            backoff(attempt)
        }
        throw BasketStoreError.tooManyConflicts(id)
    }

    /// The settings as the parameters of `hold_seconds, max_per_consumer, opens_at, closes_at,
    /// paused, room_admit_per_minute, room_admission_seconds` (times in ms, NULL for none; see
    /// `timestamp`; the room's two NULL for none).
    static func settingsParameters(_ settings: BasketSettings) -> [PostgresValue] {
        [
            .int(settings.holdSeconds), .int(settings.maxPerConsumer), settings.opensAtMilliseconds.map { .int(Int($0)) } ?? .null,
            settings.closesAtMilliseconds.map { .int(Int($0)) } ?? .null, .bool(settings.paused),
            settings.waitingRoom.map { .int($0.admitPerMinute) } ?? .null, settings.waitingRoom.map { .int($0.admissionSeconds) } ?? .null,
        ]
    }

    /// Adds `delta` to a basket's stock (and capacity: units come into or leave the sale), never
    /// below zero. The function the tests call directly.
    @discardableResult
    public static func adjustStock(_ connection: PostgresConnection, basketId: String, by delta: Int) throws -> BasketRow {
        try update(connection, basketId) { row in
            guard row.stock + delta >= 0 else { throw BasketStoreError.insufficientStock(basketId) }
            var next = row
            next.stock += delta
            next.capacity += delta
            return next
        }
    }

    public static func adjustStock(_ postgres: PostgresClient, basketId: String, by delta: Int) async throws -> BasketRow {
        try await postgres.withConnection { try adjustStock($0, basketId: basketId, by: delta) }
    }

    /// 1, 2, 4 ... 64 ms, each with full jitter, so racing writers spread out.
    static func backoff(_ attempt: Int) {
        let ceiling = UInt32(1000 << min(attempt, 6))
        usleep(UInt32.random(in: 0...ceiling))
    }
}
