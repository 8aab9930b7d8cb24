import ArgumentParser
import Foundation
import HTTPServing
import Logging
import Metrics
import NIOPosix
import PostgresClient
import Prometheus
import ReconcilerCore
import RedisClient
import ReservationCore
import ReservationScripts
import ServiceLifecycle
import UnixSignals

@main
struct ReconcilerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconciler",
        abstract: "Moves the gateway's events from Redis into PostgreSQL, and audits and repairs drift.",
        subcommands: [Run.self, Once.self, Audit.self, Migrate.self])
}

struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("redis-url"), help: "Overrides REDIS_URL.") var redisURL: String?
    @Option(name: .customLong("database-url"), help: "Overrides DATABASE_URL.") var databaseURL: String?
    @Option(help: "Overrides RECONCILER_BATCH.") var batch: Int?

    /// Everything a subcommand needs, built once from the environment and flags.
    func environment() throws -> (ReconcilerConfiguration, Logger) {
        var configuration: ReconcilerConfiguration
        do {
            configuration = try ReconcilerConfiguration(environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError("\(error)")
        }
        if let redisURL { configuration.redisURL = redisURL }
        if let databaseURL { configuration.databaseURL = databaseURL }
        if let batch { configuration.reconcilerBatchSize = batch }
        let level = Logger.Level(rawValue: configuration.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return (configuration, Logger(label: "reconciler"))
    }

    func reconciler(_ configuration: ReconcilerConfiguration, _ logger: Logger) throws -> (Reconciler, RedisClient, PostgresClient) {
        var redisConfiguration: RedisConfiguration
        do {
            redisConfiguration = try RedisConfiguration(url: configuration.redisURL)
            // REDIS_WAIT_REPLICAS: a repair's writes count as done only once replicated.
            redisConfiguration.waitReplicas = configuration.redisWaitReplicas
            redisConfiguration.waitTimeout = .milliseconds(configuration.redisWaitTimeoutMilliseconds)
        } catch {
            throw ValidationError("\(error)")
        }
        let redis = RedisClient(configuration: redisConfiguration, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        let postgres = PostgresClient(url: configuration.databaseURL, size: 4, settings: configuration.postgresSettings)
        let name =
            configuration.reconcilerName
            ?? "reconciler-\(ProcessInfo.processInfo.hostName)-\(ProcessInfo.processInfo.processIdentifier)"
        let reconciler = Reconciler(
            redis: redis, postgres: postgres, configuration: configuration, consumerName: name,
            claimIdleMilliseconds: configuration.claimIdleMilliseconds, logger: logger)
        return (reconciler, redis, postgres)
    }
}

extension ReconcilerCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Consume events and audit forever, until SIGTERM/SIGINT.")
        @OptionGroup var options: CommonOptions

        /// A scrape endpoint: a few connections, short timeouts, a quick stop.
        static var metricsLimits: HTTPServerLimits {
            var limits = HTTPServerLimits()
            limits.maxConnections = 64
            limits.shutdownGrace = .seconds(1)
            limits.drainWindow = .zero
            return limits
        }

        func run() async throws {
            let (configuration, logger) = try options.environment()
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            let (reconciler, redis, postgres) = try options.reconciler(configuration, logger)
            // A batch stuck on a Postgres that stopped answering (SIGSTOP, a frozen VM) cannot be
            // interrupted: libpq blocks its thread. So SIGTERM also starts a clock; when it runs
            // out, the process exits anyway. Nothing is lost: unacknowledged entries are
            // delivered again to whichever reconciler reads next.
            let watchdog = Task.detached {
                for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                    try? await Task.sleep(for: .seconds(configuration.shutdownGraceSeconds))
                    // Cancelled: the service stopped in time (the sleep returns early on cancel).
                    guard !Task.isCancelled else { return }
                    logger.error(
                        "reconciler did not stop within its shutdown grace; exiting without its last batch",
                        metadata: ["grace_seconds": "\(configuration.shutdownGraceSeconds)"])
                    Foundation.exit(0)
                }
            }
            defer { watchdog.cancel() }
            var metricsServer: HTTPServer?
            if configuration.reconcilerMetricsPort > 0 {
                metricsServer = try await HTTPServer.start(
                    responder: MetricsEndpoint(registry: registry), group: MultiThreadedEventLoopGroup.singleton,
                    host: configuration.host, port: configuration.reconcilerMetricsPort, limits: Self.metricsLimits)
                logger.info("reconciler metrics", metadata: ["port": "\(configuration.reconcilerMetricsPort)"])
            }
            // Postgres may not be up yet: migrate with the same patience as the main loop.
            var delay = Duration.milliseconds(200)
            while true {
                do {
                    try await Migrator.migrate(postgres, logger: logger)
                    break
                } catch {
                    logger.warning("migration failed; retrying", metadata: ["error": "\(error)"])
                    try await Task.sleep(for: delay)
                    delay = min(delay * 2, .seconds(5))
                }
            }
            try? await redis.load(ReservationScripts.all)
            logger.info("reconciler running", metadata: ["consumer": "\(reconciler.consumer.name)"])
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: ReconcilerService(reconciler: reconciler))],
                    gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
            await metricsServer?.stop()
            await redis.shutdown()
            await postgres.shutdown()
        }
    }

    struct Once: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply every event that exists now, audit with repair, exit 0.")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let (configuration, logger) = try options.environment()
            let (reconciler, redis, postgres) = try options.reconciler(configuration, logger)
            try await Migrator.migrate(postgres, logger: logger)
            let failuresBefore = reconciler.housekeeping.repairFailures
            let (applied, elapsed, repaired) = try await reconciler.once()
            // (a basket whose repair failed counts among the drifts; the operator must not read it as mended)
            let failed = reconciler.housekeeping.repairFailures - failuresBefore
            logger.info(
                "once finished",
                metadata: [
                    "events": "\(applied)", "seconds": "\(elapsed)", "repaired": "\(repaired)", "repair_failures": "\(failed)",
                ])
            print(
                "applied \(applied) events in \(elapsed); repaired \(repaired) drifts"
                    + (failed > 0 ? "; \(failed) of those repairs failed (see the log; retried by the next audit)" : ""))
            await redis.shutdown()
            await postgres.shutdown()
        }
    }

    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Report drift between Redis and Postgres; change nothing. Exit 1 if any, 2 if a basket is oversold.")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let (configuration, logger) = try options.environment()
            let (reconciler, redis, postgres) = try options.reconciler(configuration, logger)
            let drifts = try await reconciler.audit(repair: false)
            for drift in drifts { print(drift) }
            if drifts.isEmpty { print("no drift") }
            await redis.shutdown()
            await postgres.shutdown()
            if drifts.contains(where: { $0.kind == .oversold }) { throw ExitCode(2) }
            if !drifts.isEmpty { throw ExitCode(1) }
        }
    }

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or upgrade the schema, then exit.")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let (configuration, logger) = try options.environment()
            let postgres = PostgresClient(url: configuration.databaseURL, size: 1, settings: configuration.postgresSettings)
            let applied = try await Migrator.migrate(postgres, logger: logger)
            print(applied.isEmpty ? "schema is current" : "applied \(applied.joined(separator: ", "))")
            await postgres.shutdown()
        }
    }
}
