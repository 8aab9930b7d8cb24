public import ConsumerTokens
import Foundation
public import NIOCore
public import ReservationCore

/// Everything the gateway can be told: its HTTP server, secrets, holds, limits and Redis tuning.
/// Read once at start-up; core options (`REDIS_URL`, `GATEWAY_HOST`, `LOG_LEVEL`) are reached
/// through it as if they were its own.
@dynamicMemberLookup
public struct GatewayConfiguration: Sendable, Equatable {
    public var core = CoreConfiguration()
    /// `GATEWAY_PORT`, default `8080`.
    public var port: Int = 8080
    /// `ADMIN_TOKEN`, no default: the gateway refuses to start without one unless `--dev`.
    public var adminToken: String?
    /// `WEBHOOK_SECRET`, no default: the gateway refuses to start without one unless `--dev`.
    public var webhookSecret: String?
    /// `ADMISSION_SECRET`, no default: the HMAC key of waiting-room tickets and admissions (every
    /// gateway of a deployment shares it). The gateway refuses to start without one unless `--dev`.
    public var admissionSecret: String?
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
    /// `QUEUE_CACHE_MS`, default 1000: how long a gateway answers a waiting room's polls (and its
    /// basket view's counts, and refusals without an admission) from the room's last snapshot.
    public var queueCacheMilliseconds: Int = 1000
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
    /// `GATEWAY_DRAIN_MS`, default 1000: on SIGTERM, how long an open keep-alive connection may
    /// still bring a request (answered with `Connection: close`) before idle connections close.
    public var drainMilliseconds: Int = 1_000
    /// `REDIS_MAX_PENDING`, default 2048: calls one Redis connection may hold (queued plus in
    /// flight); beyond it new calls are answered 503 at once.
    public var redisMaxPending: Int = 2048
    /// `REDIS_SHED_AFTER_MS`, default 1000: when Redis has not answered the batch on the wire for
    /// this long, new calls are answered 503 at once until it does.
    public var redisShedAfterMilliseconds: Int = 1000
    /// `REDIS_COMMAND_TIMEOUT_MS`, default 5000: a batch Redis has not answered within this resets
    /// the connection (its calls fail with 503).
    public var redisCommandTimeoutMilliseconds: Int = 5000
    /// `REDIS_BATCH_DELAY_US`: how long a Redis batch waits for more calls before it leaves
    /// (0: at once). Worth a few hundred µs with `appendfsync always` (one fsync per batch).
    public var redisBatchDelayMicroseconds: Int = 0
    /// `IDEMPOTENCY_REFUSAL_SECONDS`, default 300: how long a refusal that changed nothing is
    /// replayed under its Idempotency-Key (a grant: 24 h).
    public var idempotencyRefusalSeconds: Int = Retention.idempotencyRefusalSeconds
    /// `--dev`: allow starting without secrets, using fixed, publicly known development ones.
    public var developmentMode: Bool = false
    /// `CONSUMER_AUTH`: `token` (consumers identified by a signed token) or `trusted` (a trusted
    /// front end names the consumer in the body). Default: `token` when a consumer key is set;
    /// with none, the gateway refuses to start unless `trusted` or `--dev` (then `trusted`).
    public var consumerAuth: ConsumerAuthMode?
    /// `CONSUMER_TOKEN_KEYS`: comma-separated `kid:secret` HS256 keys (secret base64url, at least
    /// 32 bytes). No default.
    public var consumerTokenKeys: String?
    /// `CONSUMER_TOKEN_JWKS`: path of a JWKS file of P-256 public keys for ES256 tokens. No default.
    public var consumerTokenJWKSPath: String?
    /// `CONSUMER_TOKEN_AUDIENCE`: when set, a token's `aud` must be or contain it. No default.
    public var consumerTokenAudience: String?

    /// How consumers are identified.
    public enum ConsumerAuthMode: String, Sendable, Equatable {
        case token
        case trusted
    }

    public static let developmentAdminToken = "dev-admin-token"
    public static let developmentWebhookSecret = "dev-webhook-secret"
    public static let developmentAdmissionSecret = "dev-admission-secret"

    public init() {}

    /// Reads the core's variables and this executable's; a bad value fails with its variable's name.
    public init(environment: [String: String]) throws {
        let environment = EnvironmentReader(environment)
        core = try CoreConfiguration(environment: environment)
        if let value = try environment.int("GATEWAY_PORT", 0...65535) { port = value }
        adminToken = environment.text("ADMIN_TOKEN")
        webhookSecret = environment.text("WEBHOOK_SECRET")
        admissionSecret = environment.text("ADMISSION_SECRET")
        if let value = try environment.int("HOLD_SECONDS", 1...86_400) { holdSeconds = value }
        if let value = try environment.int("RESERVE_RATE_LIMIT", 0...1_000_000) { reserveRateLimit = value }
        if let value = try environment.int("GATEWAY_THREADS", 1...256) { eventLoopThreads = value }
        if let value = try environment.int("EXPIRY_INTERVAL_MS", 10...60_000) { expiryIntervalMilliseconds = value }
        if let value = try environment.int("SOLD_OUT_CACHE_MS", 0...10_000) { soldOutCacheMilliseconds = value }
        if let value = try environment.int("QUEUE_CACHE_MS", 10...60_000) { queueCacheMilliseconds = value }
        if let value = try environment.int("GATEWAY_MAX_CONNECTIONS", 1...1_000_000) { maxConnections = value }
        if let value = try environment.int("GATEWAY_MAX_HEAD_BYTES", 1024...1_048_576) { maxHeadBytes = value }
        if let value = try environment.int("GATEWAY_REQUEST_TIMEOUT_MS", 100...3_600_000) { requestTimeoutMilliseconds = value }
        if let value = try environment.int("GATEWAY_IDLE_TIMEOUT_MS", 100...86_400_000) { idleTimeoutMilliseconds = value }
        if let value = try environment.int("GATEWAY_SHUTDOWN_GRACE_MS", 0...3_600_000) { shutdownGraceMilliseconds = value }
        if let value = try environment.int("GATEWAY_DRAIN_MS", 0...3_600_000) { drainMilliseconds = value }
        if let value = try environment.int("REDIS_MAX_PENDING", 1...1_000_000) { redisMaxPending = value }
        if let value = try environment.int("REDIS_SHED_AFTER_MS", 10...3_600_000) { redisShedAfterMilliseconds = value }
        if let value = try environment.int("REDIS_COMMAND_TIMEOUT_MS", 10...3_600_000) { redisCommandTimeoutMilliseconds = value }
        if let value = try environment.int("REDIS_BATCH_DELAY_US", 0...100_000) { redisBatchDelayMicroseconds = value }
        if let mode = environment.text("CONSUMER_AUTH") {
            guard let parsed = ConsumerAuthMode(rawValue: mode) else {
                throw ConfigurationProblem.invalid(variable: "CONSUMER_AUTH", reason: "expected token or trusted")
            }
            consumerAuth = parsed
        }
        consumerTokenKeys = environment.text("CONSUMER_TOKEN_KEYS")
        consumerTokenJWKSPath = environment.text("CONSUMER_TOKEN_JWKS")
        consumerTokenAudience = environment.text("CONSUMER_TOKEN_AUDIENCE")
        if let value = try environment.int("IDEMPOTENCY_REFUSAL_SECONDS", 1...Retention.idempotencySeconds) {
            idempotencyRefusalSeconds = value
        }
        // The WAIT is part of its batch: a batch timer shorter than it would reset the connection.
        if core.redisWaitReplicas > 0, core.redisWaitTimeoutMilliseconds >= redisCommandTimeoutMilliseconds {
            throw ConfigurationProblem.invalid(variable: "REDIS_WAIT_TIMEOUT_MS", reason: "must be below REDIS_COMMAND_TIMEOUT_MS")
        }
    }

    public subscript<Value>(dynamicMember keyPath: WritableKeyPath<CoreConfiguration, Value>) -> Value {
        get { core[keyPath: keyPath] }
        set { core[keyPath: keyPath] = newValue }
    }

    /// The gateway needs its three secrets; `--dev` fills in the development ones.
    public mutating func resolveSecrets() throws {
        if developmentMode {
            adminToken = adminToken ?? Self.developmentAdminToken
            webhookSecret = webhookSecret ?? Self.developmentWebhookSecret
            admissionSecret = admissionSecret ?? Self.developmentAdmissionSecret
        }
        guard adminToken != nil else { throw ConfigurationProblem.missing(variable: "ADMIN_TOKEN") }
        guard webhookSecret != nil else { throw ConfigurationProblem.missing(variable: "WEBHOOK_SECRET") }
        guard admissionSecret != nil else { throw ConfigurationProblem.missing(variable: "ADMISSION_SECRET") }
        // Secure by default: consumers are identified by tokens unless told otherwise.
        let hasKey = consumerTokenKeys != nil || consumerTokenJWKSPath != nil
        switch consumerAuth {
        case .token? where !hasKey:
            throw ConfigurationProblem.invalid(variable: "CONSUMER_AUTH", reason: "token needs CONSUMER_TOKEN_KEYS or CONSUMER_TOKEN_JWKS")
        case .trusted? where hasKey:
            // Keys set but not used would look like token checking while the body is believed.
            throw ConfigurationProblem.invalid(
                variable: "CONSUMER_AUTH",
                reason: "trusted, but consumer keys are set: choose token, or unset CONSUMER_TOKEN_KEYS and CONSUMER_TOKEN_JWKS")
        case nil where hasKey: consumerAuth = .token
        case nil where developmentMode: consumerAuth = .trusted
        case nil:
            throw ConfigurationProblem.invalid(
                variable: "CONSUMER_AUTH",
                reason: "no consumer key is set: set CONSUMER_TOKEN_KEYS or CONSUMER_TOKEN_JWKS (token mode), or CONSUMER_AUTH=trusted")
        default: break
        }
    }
}

extension GatewayConfiguration {
    /// The consumer identification this configuration asks for, with its keys read and checked
    /// (the JWKS file is read here, once): a bad key or file fails the start, naming the variable
    /// and the entry, never a secret.
    public func consumerAuthentication() throws -> RequestDecoder.ConsumerAuthentication {
        guard consumerAuth == .token else { return .trusted }
        var jwks: [UInt8]?
        if let path = consumerTokenJWKSPath {
            // Bounded before it is read (a path like /dev/zero must not hang the start).
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
            guard let size, size <= ConsumerTokenKeys.maximumJWKSBytes else {
                throw ConfigurationProblem.invalid(variable: "CONSUMER_TOKEN_JWKS", reason: "\(path) is not a readable file of at most 1 MiB")
            }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ConfigurationProblem.invalid(variable: "CONSUMER_TOKEN_JWKS", reason: "cannot read \(path)")
            }
            jwks = Array(data)
        }
        let keys: ConsumerTokenKeys
        do {
            keys = try ConsumerTokenKeys(hs256: consumerTokenKeys, jwksJSON: jwks)
        } catch {
            throw ConfigurationProblem.invalid(variable: error.source.rawValue, reason: error.description)
        }
        guard !keys.isEmpty else {
            throw ConfigurationProblem.invalid(variable: "CONSUMER_AUTH", reason: "token needs at least one consumer key")
        }
        return .token(ConsumerTokenVerifier(keys: keys, audience: consumerTokenAudience))
    }
}
