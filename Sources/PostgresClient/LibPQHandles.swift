import CLibPQ

/// A libpq `PGconn *`, typed so it cannot be mistaken for a result (both are `OpaquePointer` in
/// C). Not owning: `PostgresConnection` owns it and calls `finish()` once, in its `deinit`.
struct PGConnectionHandle {
    let pointer: OpaquePointer

    var isOK: Bool { PQstatus(pointer) == CONNECTION_OK }

    /// libpq's last error on this connection, without its trailing newline.
    var errorMessage: String { libpqText(PQerrorMessage(pointer)) }

    func finish() { PQfinish(pointer) }
}

/// One libpq `PGresult *`, owned: cleared exactly once, when this value's life ends (it cannot
/// be copied, so no second owner can clear it again), on every path, errors included.
struct PGResultHandle: ~Copyable {
    private let pointer: OpaquePointer

    /// nil when libpq returned no result (out of memory, or the connection is gone).
    init?(_ pointer: OpaquePointer?) {
        guard let pointer else { return nil }
        self.pointer = pointer
    }

    deinit { PQclear(pointer) }

    var status: ExecStatusType { PQresultStatus(pointer) }
    var rowCount: Int { Int(PQntuples(pointer)) }
    var columnCount: Int { Int(PQnfields(pointer)) }
    /// Rows a command changed (`PQcmdTuples`), 0 when it does not say.
    var changedRows: Int { Int(String(cString: PQcmdTuples(pointer))) ?? 0 }

    func columnName(_ column: Int) -> String { String(cString: PQfname(pointer, Int32(column))) }

    /// A cell as text, nil for SQL NULL.
    func text(row: Int, column: Int) -> String? {
        if PQgetisnull(pointer, Int32(row), Int32(column)) == 1 { return nil }
        let length = Int(PQgetlength(pointer, Int32(row), Int32(column)))
        guard let value = PQgetvalue(pointer, Int32(row), Int32(column)) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: UnsafeRawPointer(value), count: length), as: UTF8.self)
    }

    /// One field of an error result (`PG_DIAG_SQLSTATE` is `C`, the primary message `M`).
    func errorField(_ code: Character) -> String? {
        guard let ascii = code.asciiValue else { return nil }
        return PQresultErrorField(pointer, Int32(ascii)).map { String(cString: $0) }
    }
}

func libpqText(_ pointer: UnsafePointer<CChar>?) -> String {
    guard let pointer else { return "unknown error" }
    var text = Substring(String(cString: pointer))
    while let last = text.last, last.isNewline || last == " " { text = text.dropLast() }
    return String(text)
}
