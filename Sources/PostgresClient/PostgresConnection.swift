import CLibPQ

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Bounds on how long one connection waits. Zero turns a bound off.
public struct PostgresSessionSettings: Sendable, Equatable {
    /// The server cancels a statement that runs longer (`statement_timeout`).
    public var statementTimeoutMilliseconds: Int
    /// TCP keepalives start after this much idleness.
    public var keepaliveIdleSeconds: Int

    public init(statementTimeoutMilliseconds: Int = 30_000, keepaliveIdleSeconds: Int = 10) {
        self.statementTimeoutMilliseconds = statementTimeoutMilliseconds
        self.keepaliveIdleSeconds = keepaliveIdleSeconds
    }
}

/// Owns one libpq `PGconn`, closed exactly once in `deinit`. Every `PGresult` is cleared where it
/// is read. Calls block, so a connection is only ever used on a thread of `PostgresClient`'s pool
/// (or a test's own thread), one thread at a time; it is deliberately not `Sendable`.
public final class PostgresConnection {
    private let connection: PGConnectionHandle
    private var handle: OpaquePointer { connection.pointer }

    /// Connects with a libpq URI. `connect_timeout` defaults to 5 s, and `settings` give the
    /// statement timeout and TCP keepalives; a parameter the URI sets itself wins (libpq applies
    /// the expanded `dbname` last).
    public init(url: String, settings: PostgresSessionSettings = PostgresSessionSettings()) throws {
        var keywords = ["connect_timeout"]
        var values = ["5"]
        if settings.keepaliveIdleSeconds > 0 {
            // A peer that vanished (host gone, network cut) is noticed within idle + 3 × 5 s, and
            // a write nobody acknowledges fails after the same time (tcp_user_timeout).
            keywords += ["keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"]
            values += ["1", String(settings.keepaliveIdleSeconds), "5", "3", String((settings.keepaliveIdleSeconds + 15) * 1000)]
        }
        if settings.statementTimeoutMilliseconds > 0 {
            keywords.append("options")
            values.append("-c statement_timeout=\(settings.statementTimeoutMilliseconds)")
        }
        keywords.append("dbname")
        values.append(url)
        let pointer: OpaquePointer? = withCStrings(keywords) { keywordPointers in
            withCStrings(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let pointer else {
            throw PostgresError(kind: .connection, message: "libpq could not allocate a connection")
        }
        let connection = PGConnectionHandle(pointer: pointer)
        guard connection.isOK else {
            let message = connection.errorMessage
            connection.finish()
            throw PostgresError(kind: .connection, message: message)
        }
        self.connection = connection
        // Server notices ("relation already exists, skipping") are not errors; keep them off stderr.
        PQsetNoticeProcessor(pointer, { _, _ in }, nil)
        try execute("SET TIME ZONE 'UTC'")
    }

    deinit {
        connection.finish()
    }

    /// False once libpq has seen the connection break; the pool then drops it.
    public var isHealthy: Bool { connection.isOK }

    /// Runs one parameterized statement and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: [PostgresValue] = []) throws -> [PostgresRow] {
        try run(sql, parameters) { result in
            let rowCount = result.rowCount
            let columnCount = result.columnCount
            let columns = (0..<columnCount).map { result.columnName($0) }
            var rows: [PostgresRow] = []
            rows.reserveCapacity(rowCount)
            for row in 0..<rowCount {
                var cells: [PostgresCell] = []
                cells.reserveCapacity(columnCount)
                for column in 0..<columnCount {
                    cells.append(PostgresCell(raw: result.text(row: row, column: column)))
                }
                rows.append(PostgresRow(columns: columns, cells: cells))
            }
            return rows
        }
    }

    /// Runs one parameterized statement and returns how many rows it changed.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = []) throws -> Int {
        try run(sql, parameters) { result in result.changedRows }
    }

    /// Runs `body` in a transaction: committed if it returns, rolled back if it throws.
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try execute("BEGIN")
        do {
            let value = try body(self)
            try execute("COMMIT")
            return value
        } catch {
            if isHealthy { _ = try? execute("ROLLBACK") }
            throw error
        }
    }

    /// Bulk load through `COPY ... FROM STDIN`: the fast path for tens of thousands of rows.
    /// `table` and `columns` are identifiers and are quoted; values go in COPY's text format.
    @discardableResult
    public func copy(into table: String, columns: [String], rows: [[PostgresValue]]) throws -> Int {
        let columnList = columns.map(Self.quoteIdentifier).joined(separator: ", ")
        let statement = "COPY \(Self.quoteIdentifier(table)) (\(columnList)) FROM STDIN"
        do {
            guard let started = PGResultHandle(PQexec(handle, statement)) else {
                throw PostgresError(kind: .connection, message: connection.errorMessage)
            }
            if started.status != PGRES_COPY_IN { throw makeError(started) }
        }

        var chunk: [UInt8] = []
        chunk.reserveCapacity(1 << 16)
        var copyError: PostgresError?
        func send() {
            guard copyError == nil, !chunk.isEmpty else { return }
            let status = chunk.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(handle, $0.baseAddress, Int32($0.count)) }
            }
            if status != 1 { copyError = PostgresError(kind: .connection, message: connection.errorMessage) }
            chunk.removeAll(keepingCapacity: true)
        }
        for row in rows {
            for (index, value) in row.enumerated() {
                if index > 0 { chunk.append(0x09) }
                guard let text = try value.encoded() else {
                    chunk.append(contentsOf: [0x5C, 0x4E])  // \N
                    continue
                }
                for byte in text.utf8 {
                    switch byte {
                    case 0x5C: chunk.append(contentsOf: [0x5C, 0x5C])
                    case 0x09: chunk.append(contentsOf: [0x5C, 0x74])
                    case 0x0A: chunk.append(contentsOf: [0x5C, 0x6E])
                    case 0x0D: chunk.append(contentsOf: [0x5C, 0x72])
                    default: chunk.append(byte)
                    }
                }
            }
            chunk.append(0x0A)
            if chunk.count >= 1 << 16 { send() }
        }
        send()
        if PQputCopyEnd(handle, copyError == nil ? nil : "client error") != 1, copyError == nil {
            copyError = PostgresError(kind: .connection, message: connection.errorMessage)
        }
        var copied = 0
        while let result = PGResultHandle(PQgetResult(handle)) {
            if result.status == PGRES_COMMAND_OK {
                copied = result.changedRows
            } else if copyError == nil {
                copyError = makeError(result)
            }
        }
        if let copyError { throw copyError }
        return copied
    }

    private func run<T>(_ sql: String, _ parameters: [PostgresValue], _ read: (borrowing PGResultHandle) throws -> T) throws -> T {
        let encoded = try parameters.map { try $0.encoded() }
        let pointer: OpaquePointer? = withOptionalCStrings(encoded) { values in
            PQexecParams(handle, sql, Int32(encoded.count), nil, values, nil, nil, 0)
        }
        guard let result = PGResultHandle(pointer) else {
            throw PostgresError(kind: .connection, message: connection.errorMessage)
        }
        switch result.status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return try read(result)
        default:
            throw makeError(result)
        }
    }

    private func makeError(_ result: borrowing PGResultHandle) -> PostgresError {
        let sqlState = result.errorField("C")
        let message = result.errorField("M") ?? connection.errorMessage
        let kind: PostgresError.Kind = (sqlState == nil && !isHealthy) ? .connection : .query
        return PostgresError(kind: kind, sqlState: sqlState, message: message)
    }

    static func quoteIdentifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}

/// Calls `body` with a C array of C strings that lives only for the call.
private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    withOptionalCStrings(strings.map(Optional.some) + [nil]) { body($0) }
}

private func withOptionalCStrings<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    var owned: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0)! } }
    defer { for pointer in owned { free(pointer) } }
    return owned.withUnsafeMutableBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(1, buffer.count)) { body($0) }
    }
}
