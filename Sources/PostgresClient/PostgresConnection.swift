import CLibPQ
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Owns one libpq `PGconn`, closed exactly once in `deinit`. Every `PGresult` is cleared where it
/// is read. Calls block, so a connection is only ever used on a thread of `PostgresClient`'s pool
/// (or a test's own thread), one thread at a time; it is deliberately not `Sendable`.
public final class PostgresConnection {
    private let handle: OpaquePointer

    /// Connects with a libpq URI. `connect_timeout` defaults to 5 s unless the URI sets it.
    public init(url: String) throws {
        let keywords = ["connect_timeout", "dbname"]
        let values = ["5", url]
        let connection: OpaquePointer? = withCStrings(keywords) { keywordPointers in
            withCStrings(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let connection else {
            throw PostgresError(kind: .connection, message: "libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = Self.errorText(PQerrorMessage(connection))
            PQfinish(connection)
            throw PostgresError(kind: .connection, message: message)
        }
        self.handle = connection
        // Server notices ("relation already exists, skipping") are not errors; keep them off stderr.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        try execute("SET TIME ZONE 'UTC'")
    }

    deinit {
        PQfinish(handle)
    }

    /// False once libpq has seen the connection break; the pool then drops it.
    public var isHealthy: Bool { PQstatus(handle) == CONNECTION_OK }

    /// Runs one parameterized statement and returns its rows.
    @discardableResult
    public func query(_ sql: String, _ parameters: [PostgresValue] = []) throws -> [PostgresRow] {
        try run(sql, parameters) { result in
            let rowCount = Int(PQntuples(result))
            let columnCount = Int(PQnfields(result))
            var columns: [String] = []
            columns.reserveCapacity(columnCount)
            for column in 0..<columnCount {
                columns.append(String(cString: PQfname(result, Int32(column))))
            }
            var rows: [PostgresRow] = []
            rows.reserveCapacity(rowCount)
            for row in 0..<rowCount {
                var cells: [PostgresCell] = []
                cells.reserveCapacity(columnCount)
                for column in 0..<columnCount {
                    if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                        cells.append(PostgresCell(raw: nil))
                    } else {
                        let length = Int(PQgetlength(result, Int32(row), Int32(column)))
                        let pointer = UnsafeRawPointer(PQgetvalue(result, Int32(row), Int32(column))!)
                        let bytes = UnsafeRawBufferPointer(start: pointer, count: length)
                        cells.append(PostgresCell(raw: String(decoding: bytes, as: UTF8.self)))
                    }
                }
                rows.append(PostgresRow(columns: columns, cells: cells))
            }
            return rows
        }
    }

    /// Runs one parameterized statement and returns how many rows it changed.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = []) throws -> Int {
        try run(sql, parameters) { result in
            Int(String(cString: PQcmdTuples(result))) ?? 0
        }
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
        let started = PQexec(handle, statement)
        let startStatus = PQresultStatus(started)
        if startStatus != PGRES_COPY_IN {
            let error = makeError(started)
            PQclear(started)
            throw error
        }
        PQclear(started)

        var chunk: [UInt8] = []
        chunk.reserveCapacity(1 << 16)
        var copyError: PostgresError?
        func send() {
            guard copyError == nil, !chunk.isEmpty else { return }
            let status = chunk.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(handle, $0.baseAddress, Int32($0.count)) }
            }
            if status != 1 { copyError = PostgresError(kind: .connection, message: Self.errorText(PQerrorMessage(handle))) }
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
            copyError = PostgresError(kind: .connection, message: Self.errorText(PQerrorMessage(handle)))
        }
        var copied = 0
        while let result = PQgetResult(handle) {
            if PQresultStatus(result) == PGRES_COMMAND_OK {
                copied = Int(String(cString: PQcmdTuples(result))) ?? 0
            } else if copyError == nil {
                copyError = makeError(result)
            }
            PQclear(result)
        }
        if let copyError { throw copyError }
        return copied
    }

    private func run<T>(_ sql: String, _ parameters: [PostgresValue], _ read: (OpaquePointer) throws -> T) throws -> T {
        let encoded = try parameters.map { try $0.encoded() }
        let result: OpaquePointer? = withOptionalCStrings(encoded) { values in
            PQexecParams(handle, sql, Int32(encoded.count), nil, values, nil, nil, 0)
        }
        guard let result else {
            throw PostgresError(kind: .connection, message: Self.errorText(PQerrorMessage(handle)))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return try read(result)
        default:
            throw makeError(result)
        }
    }

    private func makeError(_ result: OpaquePointer?) -> PostgresError {
        let sqlState = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        let primary = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
        let message = primary ?? Self.errorText(PQerrorMessage(handle))
        let kind: PostgresError.Kind = (sqlState == nil && !isHealthy) ? .connection : .query
        return PostgresError(kind: kind, sqlState: sqlState, message: message)
    }

    private static func errorText(_ pointer: UnsafePointer<CChar>?) -> String {
        guard let pointer else { return "unknown error" }
        return String(cString: pointer).trimmingTrailingNewlines()
    }

    static func quoteIdentifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

private extension String {
    func trimmingTrailingNewlines() -> String {
        var text = Substring(self)
        while let last = text.last, last.isNewline || last == " " { text = text.dropLast() }
        return String(text)
    }

    func replacingOccurrences(of target: String, with replacement: String) -> String {
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
