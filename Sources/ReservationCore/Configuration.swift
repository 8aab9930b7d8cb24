import NIOCore

/// Everything the two executables can be told, read once at start-up from the environment
/// (flags may override each). Defaults work with `scripts/services.sh`.
public struct Configuration: Sendable, Equatable {
    /// `REDIS_URL`, default `redis://127.0.0.1:6379`.
    public var redisURL: String = "redis://127.0.0.1:6379"
    /// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/reservations`.
    public var databaseURL: String = "postgres://postgres@127.0.0.1:5432/reservations"
    /// `GATEWAY_HOST`, default `127.0.0.1`.
    public var host: String = "127.0.0.1"
    /// `GATEWAY_PORT`, default `8080`.
    public var port: Int = 8080
    /// `ADMIN_TOKEN`, no default: the gateway refuses to start without one unless `--dev`.
    public var adminToken: String?
    /// `WEBHOOK_SECRET`, no default: the gateway refuses to start without one unless `--dev`.
    public var webhookSecret: String?
    /// `HOLD_SECONDS`, default 600: the hold of a basket created without `holdSeconds`.
    public var holdSeconds: Int = 600
    /// `RESERVE_RATE_LIMIT`, default 20: attempts per consumer per second; 0 turns it off.
    public var reserveRateLimit: Int = 20
    /// `GATEWAY_THREADS`, default: one per core the process may use (NIO's count, which honours a
    /// container's CPU quota and cpuset). Event loops, each with its own Redis connection.
    public var eventLoopThreads: Int = System.coreCount
    /// `EXPIRY_INTERVAL_MS`, default 250: how often the gateway looks for due holds.
    public var expiryIntervalMilliseconds: Int = 250
    /// `SOLD_OUT_CACHE_MS`, default 50: how long a sold-out answer may be repeated from memory
    /// (only refusals; 0 turns it off).
    public var soldOutCacheMilliseconds: Int = 50
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
    /// `GATEWAY_MAX_CONNECTIONS`, default 10000: open connections beyond this are closed at once.
    public var maxConnections: Int = 10_000
    /// `GATEWAY_MAX_HEAD_BYTES`, default 16384: the largest request line plus headers (431 beyond).
    public var maxHeadBytes: Int = 16 * 1024
    /// `GATEWAY_REQUEST_TIMEOUT_MS`, default 10000: time a client has to send a whole request
    /// (head and body) once its first byte arrived; slower clients are closed.
    public var requestTimeoutMilliseconds: Int = 10_000
    /// `GATEWAY_IDLE_TIMEOUT_MS`, default 60000: a connection with no request under way is closed after this.
    public var idleTimeoutMilliseconds: Int = 60_000
    /// `GATEWAY_SHUTDOWN_GRACE_MS`, default 10000: on SIGTERM, how long requests already received
    /// have to be answered before their connections are closed anyway.
    public var shutdownGraceMilliseconds: Int = 10_000
    /// `REDIS_MAX_PENDING`, default 2048: calls one Redis connection may hold (queued plus in
    /// flight); beyond it new calls are answered 503 at once.
    public var redisMaxPending: Int = 2048
    /// `REDIS_SHED_AFTER_MS`, default 1000: when Redis has not answered the batch on the wire for
    /// this long, new calls are answered 503 at once until it does.
    public var redisShedAfterMilliseconds: Int = 1000
    /// `REDIS_COMMAND_TIMEOUT_MS`, default 5000: a batch Redis has not answered within this resets
    /// the connection (its calls fail with 503).
    public var redisCommandTimeoutMilliseconds: Int = 5000
    /// `LOG_LEVEL`, default `info`.
    public var logLevel: String = "info"
    /// `--dev`: allow starting without secrets, using fixed, publicly known development ones.
    public var developmentMode: Bool = false

    public static let developmentAdminToken = "dev-admin-token"
    public static let developmentWebhookSecret = "dev-webhook-secret"

    public init() {}

    public enum Problem: Error, CustomStringConvertible, Equatable {
        case invalid(variable: String, reason: String)
        case missing(variable: String)

        public var description: String {
            switch self {
            case .invalid(let variable, let reason): return "\(variable) is invalid: \(reason)"
            case .missing(let variable): return "\(variable) is required (or start with --dev for development secrets)"
            }
        }
    }

    /// Reads every variable of the table in README.md; unknown values fail with the variable's name.
    public init(environment: [String: String]) throws {
        func text(_ name: String) -> String? {
            guard let value = environment[name], !value.isEmpty else { return nil }
            return value
        }
        func int(_ name: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let raw = text(name) else { return nil }
            guard let value = Int(raw), range.contains(value) else {
                throw Problem.invalid(variable: name, reason: "expected an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return value
        }
        if let value = text("REDIS_URL") { redisURL = value }
        if let value = text("DATABASE_URL") { databaseURL = value }
        if let value = text("GATEWAY_HOST") { host = value }
        if let value = try int("GATEWAY_PORT", 0...65535) { port = value }
        adminToken = text("ADMIN_TOKEN")
        webhookSecret = text("WEBHOOK_SECRET")
        if let value = try int("HOLD_SECONDS", 1...86_400) { holdSeconds = value }
        if let value = try int("RESERVE_RATE_LIMIT", 0...1_000_000) { reserveRateLimit = value }
        if let value = try int("GATEWAY_THREADS", 1...256) { eventLoopThreads = value }
        if let value = try int("EXPIRY_INTERVAL_MS", 10...60_000) { expiryIntervalMilliseconds = value }
        if let value = try int("SOLD_OUT_CACHE_MS", 0...10_000) { soldOutCacheMilliseconds = value }
        if let value = try int("RECONCILER_BATCH", 1...100_000) { reconcilerBatchSize = value }
        if let value = try int("AUDIT_INTERVAL_SECONDS", 1...86_400) { auditIntervalSeconds = value }
        if let value = try int("CLAIM_IDLE_MS", 0...86_400_000) { claimIdleMilliseconds = value }
        if let value = try int("GATEWAY_MAX_CONNECTIONS", 1...1_000_000) { maxConnections = value }
        if let value = try int("GATEWAY_MAX_HEAD_BYTES", 1024...1_048_576) { maxHeadBytes = value }
        if let value = try int("GATEWAY_REQUEST_TIMEOUT_MS", 100...3_600_000) { requestTimeoutMilliseconds = value }
        if let value = try int("GATEWAY_IDLE_TIMEOUT_MS", 100...86_400_000) { idleTimeoutMilliseconds = value }
        if let value = try int("GATEWAY_SHUTDOWN_GRACE_MS", 0...3_600_000) { shutdownGraceMilliseconds = value }
        if let value = try int("REDIS_MAX_PENDING", 1...1_000_000) { redisMaxPending = value }
        if let value = try int("REDIS_SHED_AFTER_MS", 10...3_600_000) { redisShedAfterMilliseconds = value }
        if let value = try int("REDIS_COMMAND_TIMEOUT_MS", 10...3_600_000) { redisCommandTimeoutMilliseconds = value }
        reconcilerName = text("RECONCILER_NAME")
        if let value = try int("RECONCILER_METRICS_PORT", 0...65535) { reconcilerMetricsPort = value }
        if let value = text("LOG_LEVEL") { logLevel = value }
    }

    /// The gateway needs both secrets; `--dev` fills in the development ones.
    public mutating func resolveSecrets() throws {
        if developmentMode {
            adminToken = adminToken ?? Self.developmentAdminToken
            webhookSecret = webhookSecret ?? Self.developmentWebhookSecret
        }
        guard adminToken != nil else { throw Problem.missing(variable: "ADMIN_TOKEN") }
        guard webhookSecret != nil else { throw Problem.missing(variable: "WEBHOOK_SECRET") }
    }
}
