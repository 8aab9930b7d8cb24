public import PostgresClient

#if canImport(Glibc)
    import Glibc
#endif

/// A `baskets` row.
public struct BasketRow: Sendable, Equatable {
    public var id: String
    public var stock: Int
    public var capacity: Int
    public var holdSeconds: Int
    public var maxPerConsumer: Int
    public var redisSeq: Int
    public var version: Int
    /// The stream entry that carried `redisSeq` (nil: unknown, e.g. set by a repair).
    public var redisEntry: String? = nil
    /// An event reused a `seq` Postgres had seen (Redis rolled back): events no longer set
    /// stock and capacity until a repair rebuilds the basket.
    public var rolledBack: Bool = false

    public init(
        id: String, stock: Int, capacity: Int, holdSeconds: Int, maxPerConsumer: Int, redisSeq: Int, version: Int,
        redisEntry: String? = nil, rolledBack: Bool = false
    ) {
        self.id = id
        self.stock = stock
        self.capacity = capacity
        self.holdSeconds = holdSeconds
        self.maxPerConsumer = maxPerConsumer
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
        return rows.first.map(row)
    }

    /// The columns `row` reads.
    static let columns =
        "id, stock, capacity, hold_seconds, max_per_consumer, redis_seq, version, redis_entry, (rolled_back_at IS NOT NULL) AS rolled_back"

    static func row(_ row: PostgresRow) -> BasketRow {
        BasketRow(
            id: row["id"].string ?? "", stock: row["stock"].int ?? 0, capacity: row["capacity"].int ?? 0,
            holdSeconds: row["hold_seconds"].int ?? 600, maxPerConsumer: row["max_per_consumer"].int ?? 1,
            redisSeq: row["redis_seq"].int ?? 0, version: row["version"].int ?? 0, redisEntry: row["redis_entry"].string,
            rolledBack: row["rolled_back"].string == "t")
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
                    INSERT INTO baskets (id, stock, capacity, hold_seconds, max_per_consumer, redis_seq, version, redis_entry)
                    VALUES ($1, $2, $3, $4, $5, $6, 1, $7) ON CONFLICT (id) DO NOTHING
                    """,
                    [
                        .text(id), .int(create.stock), .int(create.capacity), .int(create.holdSeconds),
                        .int(create.maxPerConsumer), .int(create.redisSeq), create.redisEntry.map { .text($0) } ?? .null,
                    ])
                continue
            }
            guard var next = try change(current) else { return current }
            next.version = current.version + 1
            let changed = try connection.execute(
                """
                UPDATE baskets SET stock = $3, capacity = $4, hold_seconds = $5, max_per_consumer = $6,
                    redis_seq = $7, version = $8, redis_entry = $9,
                    rolled_back_at = CASE WHEN $10::boolean THEN COALESCE(rolled_back_at, now()) END, updated_at = now()
                WHERE id = $1 AND version = $2
                """,
                [
                    .text(id), .int(current.version), .int(next.stock), .int(next.capacity), .int(next.holdSeconds),
                    .int(next.maxPerConsumer), .int(next.redisSeq), .int(next.version), next.redisEntry.map { .text($0) } ?? .null,
                    .bool(next.rolledBack),
                ])
            if changed == 1 { return next }
            backoff(attempt)
        }
        throw BasketStoreError.tooManyConflicts(id)
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
