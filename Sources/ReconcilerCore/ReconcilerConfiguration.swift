public import PostgresClient
public import ReservationCore

/// Everything the reconciler can be told: Postgres, batches, audits, claims and its metrics port.
/// Read once at start-up; core options (`REDIS_URL`, `GATEWAY_HOST`, `LOG_LEVEL`) are reached
/// through it as if they were its own.
@dynamicMemberLookup
public struct ReconcilerConfiguration: Sendable, Equatable {
    public var core = CoreConfiguration()
    /// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/reservations`.
    public var databaseURL: String = "postgres://postgres@127.0.0.1:5432/reservations"
    /// `RECONCILER_BATCH`, default 2000: stream entries applied per Postgres transaction.
    public var reconcilerBatchSize: Int = 2000
    /// `AUDIT_INTERVAL_SECONDS`, default 30: how often `reconciler run` audits.
    public var auditIntervalSeconds: Int = 30
    /// `CLAIM_IDLE_MS`, default 30000: how long an entry sits unacknowledged with another
    /// (presumably dead) reconciler before `reconciler run` takes it over.
    public var claimIdleMilliseconds: Int = 30_000
    /// `RECONCILER_NAME`, default `reconciler-<host>-<pid>`: this reconciler's consumer name.
    public var reconcilerName: String?
    /// `RECONCILER_METRICS_PORT`, default 9464 (0 turns it off): where `reconciler run` serves
    /// `/metrics` in Prometheus text format, on `GATEWAY_HOST`'s loopback default 127.0.0.1.
    public var reconcilerMetricsPort: Int = 9464

    /// `REPAIR_LEASE_MS`, default 30000: how long a repair holds a basket without renewing its
    /// lease. A repair renews it at every step; a repair that died keeps the basket out of
    /// service (503) at most this long before the next audit's repair takes it over.
    public var repairLeaseMilliseconds: Int = 30_000

    /// `TRIM_INTERVAL_MS`, default 10000: how often `reconciler run` trims acknowledged entries
    /// from the streams, however busy they are.
    public var trimIntervalMilliseconds: Int = 10_000

    /// `PG_STATEMENT_TIMEOUT_MS`, default 30000 (0: none): Postgres cancels a statement of the
    /// reconciler's that runs longer; the batch is retried.
    public var postgresStatementTimeoutMilliseconds: Int = 30_000
    /// `PG_KEEPALIVE_IDLE_SECONDS`, default 10 (0: off): TCP keepalives on Postgres connections,
    /// so a connection to a vanished host fails within about idle + 15 s instead of hanging.
    public var postgresKeepaliveIdleSeconds: Int = 10
    /// `SHUTDOWN_GRACE_SECONDS`, default 10: after SIGTERM/SIGINT, `reconciler run` waits this
    /// long for its batch to finish; if Postgres or Redis does not answer by then, it exits
    /// anyway (status 0). Nothing is lost: what was not acknowledged is delivered again.
    public var shutdownGraceSeconds: Int = 10

    public var postgresSettings: PostgresSessionSettings {
        PostgresSessionSettings(
            statementTimeoutMilliseconds: postgresStatementTimeoutMilliseconds, keepaliveIdleSeconds: postgresKeepaliveIdleSeconds)
    }

    public init() {}

    /// Reads the core's variables and this executable's; a bad value fails with its variable's name.
    public init(environment: [String: String]) throws {
        let environment = EnvironmentReader(environment)
        core = try CoreConfiguration(environment: environment)
        if let value = environment.text("DATABASE_URL") { databaseURL = value }
        if let value = try environment.int("RECONCILER_BATCH", 1...100_000) { reconcilerBatchSize = value }
        if let value = try environment.int("AUDIT_INTERVAL_SECONDS", 1...86_400) { auditIntervalSeconds = value }
        if let value = try environment.int("CLAIM_IDLE_MS", 0...86_400_000) { claimIdleMilliseconds = value }
        if let value = try environment.int("REPAIR_LEASE_MS", 1000...3_600_000) { repairLeaseMilliseconds = value }
        if let value = try environment.int("TRIM_INTERVAL_MS", 100...3_600_000) { trimIntervalMilliseconds = value }
        if let value = try environment.int("PG_STATEMENT_TIMEOUT_MS", 0...86_400_000) { postgresStatementTimeoutMilliseconds = value }
        if let value = try environment.int("PG_KEEPALIVE_IDLE_SECONDS", 0...86_400) { postgresKeepaliveIdleSeconds = value }
        if let value = try environment.int("SHUTDOWN_GRACE_SECONDS", 1...3600) { shutdownGraceSeconds = value }
        reconcilerName = environment.text("RECONCILER_NAME")
        if let value = try environment.int("RECONCILER_METRICS_PORT", 0...65535) { reconcilerMetricsPort = value }
    }

    public subscript<Value>(dynamicMember keyPath: WritableKeyPath<CoreConfiguration, Value>) -> Value {
        get { core[keyPath: keyPath] }
        set { core[keyPath: keyPath] = newValue }
    }
}
