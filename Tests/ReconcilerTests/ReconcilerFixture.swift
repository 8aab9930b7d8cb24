import Foundation
import GatewayCore
import Logging
import PostgresClient
import ReconcilerCore
import RedisClient
import ReservationCore
import TestSupport

/// A Redis and a database of the test's own, a gateway on that Redis, and reconcilers. Tests
/// here flush and stop servers, so nothing is shared with the rest of the suite.
final class ReconcilerFixture: Sendable {
    let redisServer: RedisServerProcess
    let database: TestDatabase
    let gateway: GatewayHarness
    let postgres: PostgresClient

    var redis: RedisClient { gateway.redis }
    var environment: [String: String] { ["REDIS_URL": redisServer.url, "DATABASE_URL": database.url] }

    static func start(holdSeconds: Int = 600) async throws -> ReconcilerFixture {
        let redisServer = try RedisServerProcess(appendOnly: false)
        try await redisServer.start()
        let database = try await TestDatabase.create()
        let gateway = try await GatewayHarness.start(redisURL: redisServer.url) { $0.holdSeconds = holdSeconds }
        let postgres = PostgresClient(url: database.url, size: 4)
        try await Migrator.migrate(postgres, logger: Logger(label: "test"))
        return ReconcilerFixture(redisServer: redisServer, database: database, gateway: gateway, postgres: postgres)
    }

    private init(redisServer: RedisServerProcess, database: TestDatabase, gateway: GatewayHarness, postgres: PostgresClient) {
        self.redisServer = redisServer
        self.database = database
        self.gateway = gateway
        self.postgres = postgres
    }

    func reconciler(
        _ name: String = TestEnvironment.uniqueId("rec"), postgres: PostgresClient? = nil, claimIdle: Int = 30_000, batchSize: Int = 500
    ) -> Reconciler {
        var configuration = ReconcilerConfiguration()
        configuration.redisURL = redisServer.url
        configuration.databaseURL = database.url
        configuration.reconcilerBatchSize = batchSize
        configuration.auditIntervalSeconds = 1
        var logger = Logger(label: "test-reconciler")
        logger.logLevel = .critical
        return Reconciler(
            redis: redis, postgres: postgres ?? self.postgres, configuration: configuration, consumerName: name,
            claimIdleMilliseconds: claimIdle, logger: logger)
    }

    /// What `reconciler once` does, in process.
    func once() async throws {
        _ = try await reconciler().once()
    }

    func stop() async {
        await gateway.stop()
        await postgres.shutdown()
        await database.drop()
        redisServer.stop()
    }

    // MARK: reading both sides

    func postgresBasket(_ id: String) async throws -> BasketRow? {
        try await postgres.withConnection { try BasketStore.read($0, id) }
    }

    func postgresReservations(_ basketId: String) async throws -> [String: String] {
        var statuses: [String: String] = [:]
        for row in try await postgres.query("SELECT id, status FROM reservations WHERE basket_id = $1", [.text(basketId)]) {
            statuses[row["id"].string ?? ""] = row["status"].string
        }
        return statuses
    }

    func redisStock(_ basketId: String) async throws -> Int? {
        try await gateway.basket(basketId)["stock"]?.int
    }
}
