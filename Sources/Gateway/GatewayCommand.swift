import ArgumentParser
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

/// `gateway`: the reservation HTTP API. GatewayConfiguration comes from the environment (README's
/// table); each flag overrides its variable.
@main
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gateway", abstract: "The flash-sale reservation gateway.")

    @Flag(help: "Start without ADMIN_TOKEN / WEBHOOK_SECRET, using the public development values.")
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
        if dev { logger.warning("development mode: using the public development admin token and webhook secret") }

        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.eventLoopThreads)
        let redisConfiguration: RedisConfiguration
        do {
            redisConfiguration = try RedisConfiguration(gateway: configuration)
        } catch {
            throw ValidationError("\(error)")
        }
        let gateway = await Gateway.assemble(
            configuration: configuration, redis: redisConfiguration, group: group, registry: registry, logger: logger)
        let services = ServiceGroup(
            configuration: .init(services: gateway.services(group: group), gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await services.run()
        await gateway.shutdown()
        try await group.shutdownGracefully()
        logger.info("gateway stopped")
    }
}
