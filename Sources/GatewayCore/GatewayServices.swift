import Logging
import NIOCore
import ServiceLifecycle

/// Serves HTTP until graceful shutdown (SIGTERM/SIGINT): then it stops accepting and lets
/// requests in flight finish.
public struct GatewayHTTPService: Service {
    let api: GatewayAPI
    let group: EventLoopGroup
    let host: String
    let port: Int
    let logger: Logger

    public init(api: GatewayAPI, group: EventLoopGroup, host: String, port: Int, logger: Logger) {
        self.api = api
        self.group = group
        self.host = host
        self.port = port
        self.logger = logger
    }

    public func run() async throws {
        let server = try await HTTPServer.start(responder: api, group: group, host: host, port: port)
        logger.info("gateway listening", metadata: ["host": "\(host)", "port": "\(server.port)"])
        try? await gracefulShutdown()
        logger.info("gateway stopping: no new connections, finishing requests in flight")
        await server.stop()
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
