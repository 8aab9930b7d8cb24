import ArgumentParser
import ConsumerTokens
import Foundation
import GatewayCore
import Logging
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import RedisClient
import ReservationCore
import ReservationScripts
import ServiceLifecycle
import UnixSignals

/// `gateway`: the reservation HTTP API (`gateway serve`, the default), and `gateway mint-token`
/// for development and smoke tests.
@main
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway", abstract: "The flash-sale reservation gateway.", subcommands: [Serve.self, MintToken.self],
        defaultSubcommand: Serve.self)
}

/// `gateway mint-token --sub alice`: signs a consumer token with a configured HS256 key
/// (`CONSUMER_TOKEN_KEYS`), for development, the README's examples and operators' smoke tests.
struct MintToken: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mint-token", abstract: "Print a consumer token signed with a CONSUMER_TOKEN_KEYS key.")

    @Option(help: "The consumer id (the token's sub).") var sub: String
    @Option(help: "The key id (default: the first key of CONSUMER_TOKEN_KEYS).") var kid: String?
    @Option(name: .customLong("expires-in"), help: "Seconds until it expires.") var expiresIn: Int64 = 3600
    @Option(help: "The aud claim (default: CONSUMER_TOKEN_AUDIENCE).") var audience: String?

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let configured = environment["CONSUMER_TOKEN_KEYS"], !configured.isEmpty else {
            throw ValidationError("CONSUMER_TOKEN_KEYS is not set: mint-token signs with one of its HS256 keys")
        }
        let keys: ConsumerTokenKeys
        do {
            keys = try ConsumerTokenKeys(hs256: configured, jwksJSON: nil)
        } catch {
            throw ValidationError("\(error)")
        }
        guard let keyId = kid ?? configured.split(separator: ",").first?.split(separator: ":").first.map({ $0.trimmingCharacters(in: .whitespaces) })
        else { throw ValidationError("no key id") }
        do {
            let token = try ConsumerTokenMinter(keys: keys).mint(
                kid: keyId, sub: sub, expiresIn: expiresIn, audience: audience ?? environment["CONSUMER_TOKEN_AUDIENCE"],
                now: WallClock.nowSeconds())
            print(token)
        } catch {
            throw ValidationError("cannot mint: \(error) (kid \(keyId), sub must be a consumer id, expires-in > 0)")
        }
    }
}

/// `gateway serve` (the default): the reservation HTTP API. GatewayConfiguration comes from the
/// environment (README's table); each flag overrides its variable.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve", abstract: "Serve the reservation API (the default).")

    @Flag(help: "Start without ADMIN_TOKEN / WEBHOOK_SECRET / ADMISSION_SECRET, using the public development values.")
    var dev = false
    @Option(help: "Overrides GATEWAY_HOST.") var host: String?
    @Option(help: "Overrides GATEWAY_PORT.") var port: Int?
    @Option(name: .customLong("redis-url"), help: "Overrides REDIS_URL.") var redisURL: String?
    @Option(name: .customLong("hold-seconds"), help: "Overrides HOLD_SECONDS.") var holdSeconds: Int?
    @Option(name: .customLong("rate-limit"), help: "Overrides RESERVE_RATE_LIMIT.") var rateLimit: Int?
    @Option(help: "Overrides GATEWAY_THREADS.") var threads: Int?

    func run() async throws {
        var configuration: GatewayConfiguration
        do {
            configuration = try GatewayConfiguration(environment: ProcessInfo.processInfo.environment)
            configuration.developmentMode = dev
            if let host { configuration.host = host }
            if let port { configuration.port = port }
            if let redisURL { configuration.redisURL = redisURL }
            if let holdSeconds { configuration.holdSeconds = holdSeconds }
            if let rateLimit { configuration.reserveRateLimit = rateLimit }
            if let threads { configuration.eventLoopThreads = threads }
            try configuration.resolveSecrets()
        } catch {
            throw ValidationError("\(error)")
        }
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "gateway")
        if dev { logger.warning("development mode: using the public development admin token and secrets") }
        // A short secret can be guessed offline from any ticket (never logged: only its length).
        if let secret = configuration.admissionSecret, secret.utf8.count < 32, secret != GatewayConfiguration.developmentAdmissionSecret {
            logger.warning("ADMISSION_SECRET is shorter than 32 bytes: use a long random one", metadata: ["bytes": "\(secret.utf8.count)"])
        }
        if dev && configuration.consumerAuth == .token && configuration.adminToken == GatewayConfiguration.developmentAdminToken {
            logger.warning("token mode with the public development admin token: it can read and cancel every reservation")
        }

        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.eventLoopThreads)
        let redisConfiguration: RedisConfiguration
        do {
            redisConfiguration = try RedisConfiguration(gateway: configuration)
        } catch {
            throw ValidationError("\(error)")
        }
        let gateway: Gateway
        do {
            gateway = try await Gateway.assemble(
                configuration: configuration, redis: redisConfiguration, group: group, registry: registry, logger: logger)
        } catch let problem as ConfigurationProblem {
            try await group.shutdownGracefully()
            throw ValidationError("\(problem)")
        }
        logger.info(
            "consumers identified by \(configuration.consumerAuth == .token ? "signed consumer tokens" : "the body's consumerId (trusted front end)")"
        )
        let services = ServiceGroup(
            configuration: .init(services: gateway.services(group: group), gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await services.run()
        await gateway.shutdown()
        try await group.shutdownGracefully()
        logger.info("gateway stopped")
    }
}
