/// Every failure of the Postgres layer. `sqlState` tells error classes apart; descriptions never
/// include the connection string or parameter values.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case connection
        case query
        case invalidParameter
        case shutdown
    }

    public let kind: Kind
    /// The five-character SQLSTATE, when the server sent one.
    public let sqlState: String?
    public let message: String

    public init(kind: Kind, sqlState: String? = nil, message: String) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
    }

    static func invalidParameter(_ message: String) -> PostgresError {
        PostgresError(kind: .invalidParameter, message: message)
    }

    public var isUniqueViolation: Bool { sqlState == "23505" }
    public var isSerializationFailure: Bool { sqlState == "40001" }
    public var isDeadlock: Bool { sqlState == "40P01" }
    /// Connection-class errors (SQLSTATE 08xxx, 57P01 admin shutdown) or a dead connection.
    public var isConnectionProblem: Bool {
        kind == .connection || (sqlState?.hasPrefix("08") ?? false) || sqlState == "57P01" || sqlState == "57P03"
    }

    /// The server refused the data itself (SQLSTATE class 22, data exception, e.g. a number out
    /// of range; class 23, integrity constraint): the same statement fails again on every retry.
    public var isRefusedData: Bool {
        kind == .query && ((sqlState?.hasPrefix("22") ?? false) || (sqlState?.hasPrefix("23") ?? false))
    }

    public var description: String {
        let state = sqlState.map { " [\($0)]" } ?? ""
        return "postgres \(kind) error\(state): \(message)"
    }
}
