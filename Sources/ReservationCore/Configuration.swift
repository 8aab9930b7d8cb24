/// What both executables are told, read once at start-up from the environment (flags may override
/// it). Each executable has its own configuration (`GatewayConfiguration`, `ReconcilerConfiguration`)
/// holding this core and its own options; every option is in README.md's table with its default.
public struct CoreConfiguration: Sendable, Equatable {
    /// `REDIS_URL`, default `redis://127.0.0.1:6379`.
    public var redisURL: String = "redis://127.0.0.1:6379"
    /// `GATEWAY_HOST`, default `127.0.0.1`.
    public var host: String = "127.0.0.1"
    /// `LOG_LEVEL`, default `info`.
    public var logLevel: String = "info"
    /// `REDIS_WAIT_REPLICAS`, default 0 (off): when ≥ 1, every Redis batch holding a state change
    /// (the gateway's reservations, cancels, payments, stock changes, expiries; the reconciler's
    /// repairs) is followed by `WAIT n timeout`, and those changes count as done only once that
    /// many replicas of their primary hold them. The gateway answers such a change 503
    /// `unavailable` (with `Retry-After`) when they do not within the timeout.
    public var redisWaitReplicas: Int = 0
    /// `REDIS_WAIT_TIMEOUT_MS`, default 200: how long that `WAIT` waits for the replicas. It is
    /// part of the batch: it must stay below `REDIS_COMMAND_TIMEOUT_MS` (checked at start).
    public var redisWaitTimeoutMilliseconds: Int = 200

    public init() {}

    public init(environment: EnvironmentReader) throws {
        if let value = environment.text("REDIS_URL") { redisURL = value }
        if let value = environment.text("GATEWAY_HOST") { host = value }
        if let value = environment.text("LOG_LEVEL") { logLevel = value }
        if let value = try environment.int("REDIS_WAIT_REPLICAS", 0...64) { redisWaitReplicas = value }
        if let value = try environment.int("REDIS_WAIT_TIMEOUT_MS", 1...60_000) { redisWaitTimeoutMilliseconds = value }
    }
}

/// A configuration value that cannot be used, named by its variable (never its value: secrets).
public enum ConfigurationProblem: Error, CustomStringConvertible, Equatable {
    case invalid(variable: String, reason: String)
    case missing(variable: String)

    public var description: String {
        switch self {
        case .invalid(let variable, let reason): return "\(variable) is invalid: \(reason)"
        case .missing(let variable): return "\(variable) is required (or start with --dev for development secrets)"
        }
    }
}

/// Reads variables: empty means unset; integers are range-checked.
public struct EnvironmentReader: Sendable {
    let environment: [String: String]

    public init(_ environment: [String: String]) { self.environment = environment }

    public func text(_ name: String) -> String? {
        guard let value = environment[name], !value.isEmpty else { return nil }
        return value
    }

    public func int(_ name: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let raw = text(name) else { return nil }
        guard let value = Int(raw), range.contains(value) else {
            throw ConfigurationProblem.invalid(variable: name, reason: "expected an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }
}
