import Foundation
public import GatewayCore
public import HTTPServing
import Logging
import NIOCore
public import NIOHTTP1
import Prometheus
public import RedisClient
public import ReservationCore
import ReservationScripts

/// A real gateway (HTTP server, Redis client, scripts, expiry loop) started inside the test
/// process on a free port, against the test Redis.
public final class GatewayHarness: Sendable {
    public static let adminToken = "test-admin-token"
    public static let webhookSecret = "test-webhook-secret"
    public static let admissionSecret = "test-admission-secret-0123456789abcdef"

    public let redis: RedisClient
    public let service: ReservationService
    public let api: GatewayAPI
    public let configuration: GatewayConfiguration
    public let server: HTTPServer
    private let expiry: Task<Void, Never>?

    public var port: Int { server.port }
    /// Wall-clock milliseconds when this harness started (tests read the stream from there on).
    public let startedMilliseconds = Int(Date().timeIntervalSince1970 * 1000)

    public static func start(
        redisURL: String? = nil, expiryLoop: Bool = true, loadScripts: Bool = true, configure: (inout GatewayConfiguration) -> Void = { _ in },
        limits adjustLimits: (inout HTTPServerLimits) -> Void = { _ in }
    ) async throws -> GatewayHarness {
        var configuration = GatewayConfiguration()
        configuration.redisURL = try redisURL ?? TestEnvironment.redisURL()
        configuration.adminToken = adminToken
        configuration.webhookSecret = webhookSecret
        configuration.admissionSecret = admissionSecret
        configuration.reserveRateLimit = 0
        configuration.expiryIntervalMilliseconds = 50
        // Load shedding and the command timeout are for production: on a test machine loaded by
        // design (the whole suite in parallel, CPU hogs), Redis batches can take seconds, and a
        // 503 would fail a test that is about something else. The shedding test sets its own.
        configuration.redisShedAfterMilliseconds = 600_000
        configuration.redisMaxPending = 1_000_000
        configuration.redisCommandTimeoutMilliseconds = 120_000
        configure(&configuration)
        var redisConfiguration = try RedisConfiguration(gateway: configuration)
        // A loaded test machine (the suite in parallel, CPU hogs) can starve an event loop past
        // the production 2 s connect timeout; a refused port still fails at once.
        redisConfiguration.connectTimeout = .seconds(30)
        var logger = Logger(label: "test-gateway")
        logger.logLevel = .critical
        // The gateway the binary runs (Gateway.assemble), on a free port, with its own expiry service.
        let gateway = try await Gateway.assemble(
            configuration: configuration, redis: redisConfiguration, group: TestEnvironment.eventLoopGroup,
            registry: PrometheusCollectorRegistry(), logger: logger, loadScripts: false)
        if loadScripts { try await gateway.redis.load(ReservationScripts.all) }
        var limits = HTTPServerLimits(configuration)
        limits.shutdownGrace = .seconds(5)
        adjustLimits(&limits)
        let server = try await gateway.startHTTP(group: TestEnvironment.eventLoopGroup, host: "127.0.0.1", port: 0, limits: limits)
        var expiry: Task<Void, Never>?
        if expiryLoop {
            let holdExpiry = gateway.holdExpiry
            expiry = Task { try? await holdExpiry.run() }
        }
        let (redis, service, api) = (gateway.redis, gateway.service, gateway.api)
        return GatewayHarness(redis: redis, service: service, api: api, configuration: configuration, server: server, expiry: expiry)
    }

    private init(
        redis: RedisClient, service: ReservationService, api: GatewayAPI, configuration: GatewayConfiguration, server: HTTPServer,
        expiry: Task<Void, Never>?
    ) {
        self.redis = redis
        self.service = service
        self.api = api
        self.configuration = configuration
        self.server = server
        self.expiry = expiry
    }

    public func stop() async {
        expiry?.cancel()
        await server.stop()
        await redis.shutdown()
    }

    // MARK: HTTP helpers

    public func request(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil
    ) async throws -> TestHTTPResponse {
        try await HTTPTestClient.request(port: port, method: method, path: path, headers: headers, body: body)
    }

    public var admin: [(String, String)] { [("Authorization", "Bearer \(Self.adminToken)")] }

    @discardableResult
    public func createBasket(_ basketId: String, stock: Int, holdSeconds: Int? = nil, maxPerConsumer: Int? = nil) async throws -> TestHTTPResponse {
        var fields: [String: JSONValueLiteral] = ["stock": .int(stock)]
        if let holdSeconds { fields["holdSeconds"] = .int(holdSeconds) }
        if let maxPerConsumer { fields["maxPerConsumer"] = .int(maxPerConsumer) }
        let response = try await request(.PUT, "/v1/baskets/\(basketId)", headers: admin, body: HTTPTestClient.json(fields))
        guard response.status == 201 else { throw HarnessError("creating \(basketId) answered \(response.status) \(response.text)") }
        return response
    }

    public func reserve(_ basketId: String, consumer: String, quantity: Int? = nil, idempotencyKey: String? = nil) async throws -> TestHTTPResponse {
        var fields: [String: JSONValueLiteral] = ["consumerId": .string(consumer)]
        if let quantity { fields["quantity"] = .int(quantity) }
        let headers = idempotencyKey.map { [("Idempotency-Key", $0)] } ?? []
        return try await request(.POST, "/v1/baskets/\(basketId)/reservations", headers: headers, body: HTTPTestClient.json(fields))
    }

    public func basket(_ basketId: String) async throws -> JSONValue {
        let response = try await request(.GET, "/v1/baskets/\(basketId)")
        guard response.status == 200, let json = response.json else { throw HarnessError("basket \(basketId): \(response.status)") }
        return json
    }

    /// Makes a pending reservation's hold due now, as if its `holdSeconds` had passed: tests that
    /// need an expiry use long holds and call this, so no step races a short wall-clock window.
    public func makeHoldDue(_ reservationId: String) async throws {
        guard let partition = ReservationIdGenerator.partition(of: reservationId) else { throw HarnessError("not our id: \(reservationId)") }
        let past = Int(Date().timeIntervalSince1970 * 1000) - 1000
        _ = try await redis.send("HSET", .string(Keyspace.reservation(reservationId, partition: partition)), "exp", .int(past))
        _ = try await redis.send("ZADD", .string(Keyspace.holds(partition)), "XX", .int(past), .string(reservationId))
    }

    /// A signed webhook delivery, as the payment provider would send it.
    public func deliverPayment(
        eventId: String, type: String = "payment.succeeded", reservationId: String, paymentId: String = "pay-1",
        amountCents: Int = 1299, currency: String = "EUR", timestamp: Int64? = nil, secret: String = webhookSecret
    ) async throws -> TestHTTPResponse {
        let body = Self.paymentBody(
            eventId: eventId, type: type, reservationId: reservationId, paymentId: paymentId, amountCents: amountCents, currency: currency)
        let signature = WebhookVerifier(secret: secret).signatureHeader(body: body, timestamp: timestamp ?? Int64(Date().timeIntervalSince1970))
        return try await request(.POST, "/v1/webhooks/payments", headers: [("Webhook-Signature", signature)], body: body)
    }

    public static func paymentBody(eventId: String, type: String, reservationId: String, paymentId: String, amountCents: Int, currency: String)
        -> [UInt8]
    {
        Array(
            #"{"id":"\#(eventId)","type":"\#(type)","data":{"reservationId":"\#(reservationId)","paymentId":"\#(paymentId)","amountCents":\#(amountCents),"currency":"\#(currency)"}}"#
                .utf8)
    }
}

public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension JSONValue {
    public var int: Int? { integerValue.map { Int($0) } }
}
