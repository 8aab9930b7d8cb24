import Logging
import NIOCore
import NIOHTTP1
import Prometheus
import RedisClient
import ReservationCore
@_exported import HTTPServing

extension HTTPResponse {
    static func json(_ status: HTTPResponseStatus, _ body: [UInt8]) -> HTTPResponse {
        HTTPResponse(status: status, body: body)
    }

    static func error(_ error: APIError) -> HTTPResponse {
        // The refusals a flash sale sends by the thousand have fixed bodies: render them once.
        switch error {
        case .soldOut: return soldOut
        case .limitExceeded: return limitExceeded
        default: return render(error)
        }
    }

    private static let soldOut = render(.soldOut)
    private static let limitExceeded = render(.limitExceeded)

    private static func render(_ error: APIError) -> HTTPResponse {
        var writer = JSONWriter(capacity: 128)
        writer.field("error", error.code)
        writer.field("message", error.message)
        var response = HTTPResponse(status: error.status, body: writer.finish())
        switch error {
        case .rateLimited(let seconds): response.extraHeaders.append(("Retry-After", String(seconds)))
        case .unavailable: response.extraHeaders.append(("Retry-After", "1"))
        case .methodNotAllowed(let allowed): response.extraHeaders.append(("Allow", allowed))
        case .payloadTooLarge, .requestHeaderTooLarge: response.closeConnection = true
        default: break
        }
        return response
    }
}

/// Routes requests to the reservation service, validates input, and renders answers. Every
/// error goes through `APIError` and `HTTPResponse.error`, the one place codes become bytes.
public final class GatewayAPI: HTTPResponder {
    public static let maxBodyBytes = 16 * 1024
    public var maxBodyBytes: Int { Self.maxBodyBytes }
    public var payloadTooLarge: HTTPResponse { .error(.payloadTooLarge) }
    public var requestHeaderTooLarge: HTTPResponse { .error(.requestHeaderTooLarge) }
    public var malformedRequest: HTTPResponse { .error(.invalidRequest("the request is not valid HTTP/1.1")) }

    let service: ReservationService
    let metrics: GatewayMetrics
    let registry: PrometheusCollectorRegistry?
    let configuration: Configuration
    let verifier: WebhookVerifier
    /// The HTTP server's connection counts, shown on the metrics page.
    public let connections = HTTPServerStatistics()
    private let adminAuthorization: [UInt8]
    let logger: Logger

    public init(
        service: ReservationService, metrics: GatewayMetrics, registry: PrometheusCollectorRegistry?,
        configuration: Configuration, logger: Logger
    ) {
        self.service = service
        self.metrics = metrics
        self.registry = registry
        self.configuration = configuration
        self.verifier = WebhookVerifier(secret: configuration.webhookSecret ?? "")
        self.adminAuthorization = Array(("Bearer " + (configuration.adminToken ?? "")).utf8)
        self.logger = logger
    }

    /// Answers one request on `eventLoop` and hands the answer to `completion` on that loop.
    /// Never fails: errors become their JSON answer here, the one place that happens.
    public func respond(to request: HTTPRequest, on eventLoop: EventLoop, _ completion: @escaping @Sendable (HTTPResponse) -> Void) {
        let label: String
        let future: EventLoopFuture<HTTPResponse>
        switch Router.route(method: request.method, target: request.uri) {
        case .success(let endpoint):
            label = endpoint.label
            do {
                future = try answer(endpoint, request, on: eventLoop)
            } catch {
                future = eventLoop.makeFailedFuture(error)
            }
        case .failure(let error):
            label = "unknown"
            future = eventLoop.makeFailedFuture(error)
        }
        future.whenComplete { result in
            let response: HTTPResponse
            switch result {
            case .success(let answer):
                response = answer
            case .failure(let error):
                let apiError = APIError(error)
                if case .internalError = apiError {
                    self.logger.error("request failed", metadata: ["route": "\(label)", "error": "\(error)"])
                } else if case .unavailable = apiError {
                    self.metrics.unavailable()
                }
                response = HTTPResponse.error(apiError)
            }
            self.metrics.request(route: label, status: Int(response.status.code))
            completion(response)
        }
    }

    private func answer(_ endpoint: Endpoint, _ request: HTTPRequest, on eventLoop: EventLoop) throws -> EventLoopFuture<HTTPResponse> {
        switch endpoint {
        case .health: return eventLoop.makeSucceededFuture(.json(.ok, Array(#"{"status":"ok"}"#.utf8)))
        case .ready: return readiness(on: eventLoop)
        case .metrics: return eventLoop.makeSucceededFuture(metricsPage())
        case .openapi: return eventLoop.makeSucceededFuture(Self.openAPIDocument)
        case .createBasket(let basketId): return try createBasket(basketId, request, on: eventLoop)
        case .getBasket(let basketId): return try getBasket(basketId, on: eventLoop)
        case .adjustStock(let basketId): return try adjustStock(basketId, request, on: eventLoop)
        case .reserve(let basketId): return try reserve(basketId, request, on: eventLoop)
        case .getReservation(let reservationId): return try getReservation(reservationId, on: eventLoop)
        case .cancelReservation(let reservationId): return try cancel(reservationId, on: eventLoop)
        case .webhook: return try webhook(request, on: eventLoop)
        }
    }

    /// docs/openapi.yaml, embedded at build time.
    static let openAPIDocument: HTTPResponse = {
        let text = EmbeddedDocs.sources.first { $0.key == "openapi" }?.value ?? ""
        return HTTPResponse(status: .ok, body: Array(text.utf8), contentType: "application/yaml")
    }()

    // MARK: input

    private func requireAdmin(_ request: HTTPRequest) throws {
        guard let header = request.headers.first(name: "authorization"),
              constantTimeEquals(Array(header.utf8), adminAuthorization) else { throw APIError.unauthorized }
    }

    private func requireId(_ id: String, _ name: String) throws {
        guard Identifier.isValid(id) else {
            throw APIError.invalidRequest("\(name) must be 1 to 128 characters of A-Z a-z 0-9 . _ : @ -")
        }
    }

    private func jsonObject(_ request: HTTPRequest) throws -> JSONValue {
        guard let body = request.body, body.readableBytes > 0 else { throw APIError.invalidRequest("a JSON object body is required") }
        let value: JSONValue
        do {
            value = try body.withUnsafeReadableBytes { try JSONValue.parse(raw: $0) }
        } catch {
            throw APIError.invalidRequest("the body is not valid JSON")
        }
        guard case .object = value else { throw APIError.invalidRequest("the body must be a JSON object") }
        return value
    }

    private func integer(_ object: JSONValue, _ name: String, default fallback: Int? = nil, in range: ClosedRange<Int>) throws -> Int {
        guard let raw = object[name] else {
            if let fallback { return fallback }
            throw APIError.invalidRequest("\(name) is required")
        }
        guard let value = raw.integerValue, let int = Int(exactly: value), range.contains(int) else {
            throw APIError.invalidRequest("\(name) must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return int
    }

    private func string(_ object: JSONValue, _ name: String) throws -> String {
        guard let value = object[name]?.stringValue else { throw APIError.invalidRequest("\(name) must be a string") }
        return value
    }

    // MARK: endpoints

    static let maxStock = ReservationService.maxCapacity

    private func createBasket(_ basketId: String, _ request: HTTPRequest, on eventLoop: EventLoop) throws -> EventLoopFuture<HTTPResponse> {
        try requireAdmin(request)
        try requireId(basketId, "basketId")
        let body = try jsonObject(request)
        let stock = try integer(body, "stock", in: 0...Self.maxStock)
        let hold = try integer(body, "holdSeconds", default: configuration.holdSeconds, in: 1...86_400)
        let maxPerConsumer = try integer(body, "maxPerConsumer", default: 1, in: 1...Self.maxStock)
        return service.createBasket(basketId, stock: stock, holdSeconds: hold, maxPerConsumer: maxPerConsumer, on: eventLoop)
            .map { .json(.created, $0.json()) }
    }

    private func adjustStock(_ basketId: String, _ request: HTTPRequest, on eventLoop: EventLoop) throws -> EventLoopFuture<HTTPResponse> {
        try requireAdmin(request)
        try requireId(basketId, "basketId")
        let body = try jsonObject(request)
        let delta = try integer(body, "delta", in: -Self.maxStock...Self.maxStock)
        guard delta != 0 else { throw APIError.invalidRequest("delta must not be 0") }
        return service.adjustStock(basketId, delta: delta, on: eventLoop).map { .json(.ok, $0.json()) }
    }

    private func getBasket(_ basketId: String, on eventLoop: EventLoop) throws -> EventLoopFuture<HTTPResponse> {
        try requireId(basketId, "basketId")
        return service.basket(basketId, on: eventLoop).map { .json(.ok, $0.json()) }
    }

    private func reserve(_ basketId: String, _ request: HTTPRequest, on eventLoop: EventLoop) throws -> EventLoopFuture<HTTPResponse> {
        do {
            try requireId(basketId, "basketId")
            let body = try jsonObject(request)
            let consumerId = try string(body, "consumerId")
            try requireId(consumerId, "consumerId")
            let quantity = try integer(body, "quantity", default: 1, in: 1...Self.maxStock)
            let key = request.headers.first(name: "idempotency-key")
            if let key, !Identifier.isValidKey(key) {
                throw APIError.invalidRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
            }
            let reserveRequest = ReservationService.ReserveRequest(
                basketId: basketId, consumerId: consumerId, quantity: quantity, idempotencyKey: key)
            return service.reserve(reserveRequest, on: eventLoop).flatMapThrowing { answer in
                switch answer {
                case .granted(let reservationId, let expiresAt, let remaining):
                    self.metrics.reservation("granted")
                    var writer = JSONWriter(capacity: 256)
                    writer.field("reservationId", reservationId)
                    writer.field("basketId", basketId)
                    writer.field("consumerId", consumerId)
                    writer.field("quantity", quantity)
                    writer.field("status", "pending")
                    writer.field("expiresAt", RFC3339.format(milliseconds: expiresAt))
                    writer.field("remaining", remaining)
                    return .json(.created, writer.finish())
                case .refused(let error):
                    self.metrics.reservation(error.code)
                    throw error
                }
            }
        } catch {
            metrics.reservation("rejected")
            throw error
        }
    }

    private func getReservation(_ reservationId: String, on eventLoop: EventLoop) throws -> EventLoopFuture<HTTPResponse> {
        try requireId(reservationId, "reservationId")
        return service.reservation(reservationId, on: eventLoop).map { .json(.ok, $0.json()) }
    }

    private func cancel(_ reservationId: String, on eventLoop: EventLoop) throws -> EventLoopFuture<HTTPResponse> {
        try requireId(reservationId, "reservationId")
        return service.cancel(reservationId, on: eventLoop).map { .json(.ok, $0.json()) }
    }

    static let paymentTypes: Set<String> = ["payment.succeeded", "payment.failed"]

    private func webhook(_ request: HTTPRequest, on eventLoop: EventLoop) throws -> EventLoopFuture<HTTPResponse> {
        let raw = request.body.map { Array($0.readableBytesView) } ?? []
        guard verifier.isValid(signatureHeader: request.headers.first(name: "webhook-signature"), body: raw) else {
            metrics.webhook("invalid_signature")
            throw APIError.invalidSignature
        }
        let body = try jsonObject(request)
        let eventId = try string(body, "id")
        guard Identifier.isValidKey(eventId) else { throw APIError.invalidRequest("id must be 1 to 255 visible ASCII characters") }
        let type = try string(body, "type")
        guard Self.paymentTypes.contains(type) else {
            throw APIError.invalidRequest("type must be payment.succeeded or payment.failed")
        }
        guard let data = body["data"], case .object = data else { throw APIError.invalidRequest("data must be an object") }
        let reservationId = try string(data, "reservationId")
        try requireId(reservationId, "data.reservationId")
        let paymentId = try string(data, "paymentId")
        guard Identifier.isValidKey(paymentId) else { throw APIError.invalidRequest("data.paymentId must be 1 to 255 visible ASCII characters") }
        guard let amount = data["amountCents"]?.integerValue, amount >= 0 else {
            throw APIError.invalidRequest("data.amountCents must be a non-negative integer")
        }
        let currency = try string(data, "currency")
        guard (1...16).contains(currency.utf8.count), Identifier.isValid(currency) else {
            throw APIError.invalidRequest("data.currency must be a currency code")
        }
        let event = ReservationService.PaymentEvent(
            eventId: eventId, type: type, reservationId: reservationId, paymentId: paymentId,
            amountCents: amount, currency: currency)
        return service.applyPayment(event, on: eventLoop).map { result in
            switch result {
            case .duplicate:
                self.metrics.webhook("duplicate")
                return .json(.ok, Array(#"{"status":"duplicate"}"#.utf8))
            case .processed(let outcome):
                self.metrics.webhook(outcome)
                var writer = JSONWriter(capacity: 64)
                writer.field("status", "processed")
                writer.field("outcome", outcome)
                return .json(.ok, writer.finish())
            }
        }
    }

    private func readiness(on eventLoop: EventLoop) -> EventLoopFuture<HTTPResponse> {
        service.redis.send(["PING"], on: eventLoop).map { _ -> HTTPResponse in
            .json(.ok, Array(#"{"status":"ready"}"#.utf8))
        }.flatMapErrorThrowing { _ in
            throw APIError.unavailable("redis does not answer")
        }
    }

    private func metricsPage() -> HTTPResponse {
        var bytes: [UInt8] = []
        registry?.emit(into: &bytes)
        return HTTPResponse(status: .ok, body: bytes, contentType: "text/plain; version=0.0.4; charset=utf-8")
    }
}
