import Foundation
public import Logging
public import PostgresClient

/// Applies migrations/*.sql (embedded at build time) in name order, each once. Safe to run twice
/// and from two processes at once: the whole run holds a transaction-scoped advisory lock.
public struct Migrator: Sendable {
    static let lockKey = 7_245_190_331

    public static var migrations: [(version: String, sql: String)] {
        EmbeddedMigrations.sources.map { (version: $0.key, sql: $0.value) }
    }

    /// Returns the versions it applied now (empty when the schema was already current).
    @discardableResult
    public static func migrate(_ postgres: PostgresClient, logger: Logger) async throws -> [String] {
        let applied = try await postgres.transaction { connection -> [String] in
            try connection.execute("SELECT pg_advisory_xact_lock($1)", [.int(lockKey)])
            try connection.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                """)
            let done = Set(try connection.query("SELECT version FROM schema_migrations").compactMap { $0["version"].string })
            var appliedNow: [String] = []
            for migration in migrations where !done.contains(migration.version) {
                // One statement per ';'-terminated block: the extended protocol takes one at a time.
                for statement in statements(migration.sql) {
                    try connection.execute(statement)
                }
                try connection.execute("INSERT INTO schema_migrations (version) VALUES ($1)", [.text(migration.version)])
                appliedNow.append(migration.version)
            }
            return appliedNow
        }
        for version in applied { logger.info("migration applied", metadata: ["version": "\(version)"]) }
        return applied
    }

    /// Splits a migration into statements at `;` line ends, dropping `--` comment lines; a
    /// dollar-quoted body (`$$ ... $$`, a function's) is never split.
    static func statements(_ sql: String) -> [String] {
        var statements: [String] = []
        var current = ""
        var inDollarQuote = false
        for line in sql.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if !inDollarQuote && (trimmed.hasPrefix("--") || trimmed.isEmpty) { continue }
            current += line + "\n"
            if line.components(separatedBy: "$$").count % 2 == 0 { inDollarQuote.toggle() }
            if !inDollarQuote && trimmed.hasSuffix(";") {
                statements.append(current)
                current = ""
            }
        }
        if !current.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { statements.append(current) }
        return statements
    }
}
