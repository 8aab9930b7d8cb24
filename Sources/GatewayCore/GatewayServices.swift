public import HTTPServing
public import Logging
public import NIOCore
public import Prometheus
public import RedisClient
public import ReservationCore
import ReservationScripts
public import ServiceLifecycle

/// The gateway, assembled in one place for the executable and the test harness (so a test runs
/// the gateway the binary runs): the Redis client with its scripts, the reservation service, the
/// API, the hold-expiry loop, and the HTTP server they answer through.
public struct Gateway: Sendable {
    public let configuration: GatewayConfiguration
    public let redis: RedisClient
    public let service: ReservationService
    public let api: GatewayAPI
    public let metrics: GatewayMetrics
    /// Expires due holds every `GATEWAY_EXPIRY_INTERVAL_MS`.
    public let holdExpiry: HoldExpiryService
    let logger: Logger

    /// Builds every part from one configuration. `loadScripts`: load the Lua scripts now (a
    /// failure is not fatal: `/readyz` says 503 until Redis answers, and a script is loaded again
    /// on its first NOSCRIPT).
    public static func assemble(
        configuration: GatewayConfiguration, redis redisConfiguration: RedisConfiguration, group: any EventLoopGroup,
        registry: PrometheusCollectorRegistry, logger: Logger, loadScripts: Bool = true
    ) async throws -> Gateway {
        let consumers = try configuration.consumerAuthentication()
        let redis = RedisClient(configuration: redisConfiguration, eventLoopGroup: group)
        if loadScripts {
            do {
                try await redis.load(ReservationScripts.all)
            } catch {
                logger.warning("redis not reachable at start", metadata: ["error": "\(error)"])
            }
        }
        let metrics = GatewayMetrics(factory: PrometheusMetricsFactory(registry: registry))
        let service = ReservationService(redis: redis, configuration: configuration, metrics: metrics)
        let api = GatewayAPI(
            service: service, metrics: metrics, registry: registry, configuration: configuration, consumers: consumers, logger: logger)
        let expiry = HoldExpiryService(service: service, interval: .milliseconds(configuration.expiryIntervalMilliseconds), logger: logger)
        return Gateway(
            configuration: configuration, redis: redis, service: service, api: api, metrics: metrics, holdExpiry: expiry, logger: logger)
    }

    /// Starts answering HTTP on `host`:`port` (port 0: any free one) with `limits`.
    public func startHTTP(
        group: any EventLoopGroup, host: String? = nil, port: Int? = nil, limits: HTTPServerLimits? = nil
    ) async throws -> HTTPServer {
        try await HTTPServer.start(
            responder: api, group: group, host: host ?? configuration.host, port: port ?? configuration.port,
            limits: limits ?? HTTPServerLimits(configuration), statistics: api.connections)
    }

    /// What the executable runs, in the order a graceful stop needs (it runs in reverse): the HTTP
    /// server stops first (no new requests; those received are answered), then the expiry loop.
    public func services(group: any EventLoopGroup) -> [ServiceGroupConfiguration.ServiceConfiguration] {
        [.init(service: holdExpiry), .init(service: GatewayHTTPService(gateway: self, group: group))]
    }

    /// Closes the Redis connections (after the services stopped).
    public func shutdown() async {
        await redis.shutdown()
    }
}

/// Serves HTTP until graceful shutdown (SIGTERM/SIGINT): then it stops accepting and lets
/// requests in flight finish.
public struct GatewayHTTPService: Service {
    let gateway: Gateway
    let group: any EventLoopGroup

    public init(gateway: Gateway, group: any EventLoopGroup) {
        self.gateway = gateway
        self.group = group
    }

    public func run() async throws {
        let logger = gateway.logger
        let server = try await gateway.startHTTP(group: group)
        logger.info("gateway listening", metadata: ["host": "\(gateway.configuration.host)", "port": "\(server.port)"])
        try? await gracefulShutdown()
        logger.info("gateway stopping: no new connections; answering requests already received, then closing")
        await server.stop()
        logger.info("gateway connections closed", metadata: ["open": "\(server.statistics.openConnections)"])
    }
}

extension HTTPServerLimits {
    /// The gateway's limits, from its configuration (README, "Security and limits").
    public init(_ configuration: GatewayConfiguration) {
        self.init()
        maxConnections = configuration.maxConnections
        maxHeadBytes = configuration.maxHeadBytes
        requestTimeout = .milliseconds(configuration.requestTimeoutMilliseconds)
        idleTimeout = .milliseconds(configuration.idleTimeoutMilliseconds)
        shutdownGrace = .milliseconds(configuration.shutdownGraceMilliseconds)
        drainWindow = .milliseconds(configuration.drainMilliseconds)
    }
}

extension RedisConfiguration {
    /// REDIS_URL plus the gateway's load-shedding settings and REDIS_WAIT_REPLICAS.
    public init(gateway configuration: GatewayConfiguration) throws {
        try self.init(url: configuration.redisURL)
        maxPendingCommands = configuration.redisMaxPending
        shedAfter = .milliseconds(configuration.redisShedAfterMilliseconds)
        commandTimeout = .milliseconds(configuration.redisCommandTimeoutMilliseconds)
        batchDelay = .microseconds(configuration.redisBatchDelayMicroseconds)
        waitReplicas = configuration.redisWaitReplicas
        waitTimeout = .milliseconds(configuration.redisWaitTimeoutMilliseconds)
    }
}

/// Expires due holds every `interval`, with no request needed. Any number of gateways may run
/// it: each hold is expired by exactly one atomic script run.
public struct HoldExpiryService: Service {
    let service: ReservationService
    let interval: Duration
    let logger: Logger

    public init(service: ReservationService, interval: Duration, logger: Logger) {
        self.service = service
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            do {
                let expired = try await service.expireDueHolds()
                if expired > 0 { logger.debug("holds expired", metadata: ["count": "\(expired)"]) }
            } catch {
                logger.warning("hold expiry failed; will retry", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }
}
