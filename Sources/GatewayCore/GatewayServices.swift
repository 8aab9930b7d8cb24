public import HTTPServing
public import Logging
public import NIOCore
public import RedisClient
public import ReservationCore
public import ServiceLifecycle

/// Serves HTTP until graceful shutdown (SIGTERM/SIGINT): then it stops accepting and lets
/// requests in flight finish.
public struct GatewayHTTPService: Service {
    let api: GatewayAPI
    let group: any EventLoopGroup
    let configuration: GatewayConfiguration
    let logger: Logger

    public init(api: GatewayAPI, group: any EventLoopGroup, configuration: GatewayConfiguration, logger: Logger) {
        self.api = api
        self.group = group
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let server = try await HTTPServer.start(
            responder: api, group: group, host: configuration.host, port: configuration.port,
            limits: HTTPServerLimits(configuration), statistics: api.connections)
        logger.info("gateway listening", metadata: ["host": "\(configuration.host)", "port": "\(server.port)"])
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
