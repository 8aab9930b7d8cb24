public import HTTPServing
public import Logging
public import NIOCore
import NIOHTTP1
public import Prometheus
public import ReservationCore
import ReservationScripts

extension HTTPResponse {
    static func json(_ status: HTTPResponseStatus, _ body: [UInt8]) -> HTTPResponse {
        HTTPResponse(status: status, body: body)
    }

    static func error(_ error: APIError) -> HTTPResponse {
        // The refusals a flash sale sends by the thousand have fixed bodies: render them once.
        switch error {
        case .soldOut: return soldOut
        case .limitExceeded: return limitExceeded
        case .salePaused: return salePaused
        case .saleClosed: return saleClosed
        default: return render(error)
        }
    }

    private static let soldOut = render(.soldOut).prepared()
    private static let limitExceeded = render(.limitExceeded).prepared()
    private static let salePaused = render(.salePaused).prepared()
    private static let saleClosed = render(.saleClosed).prepared()

    private static func render(_ error: APIError) -> HTTPResponse {
        var writer = JSONWriter(capacity: 128)
        writer.field("error", error.code)
        writer.field("message", error.message)
        if case .saleNotOpen(let opensAt, _) = error { writer.field("opensAt", RFC3339.format(milliseconds: opensAt)) }
        var response = HTTPResponse(status: error.status, body: writer.finish())
        switch error {
        case .rateLimited(let seconds), .saleNotOpen(_, let seconds): response.extraHeaders.append(("Retry-After", String(seconds)))
        case .unavailable: response.extraHeaders.append(("Retry-After", "1"))
        case .methodNotAllowed(let allowed): response.extraHeaders.append(("Allow", allowed))
        case .invalidToken: response.extraHeaders.append(("WWW-Authenticate", "Bearer"))
        case .payloadTooLarge, .requestHeaderTooLarge: response.closeConnection = true
        default: break
        }
        return response
    }
}

/// Answers requests: `RequestDecoder` turns each into a validated command (or an error), this
/// runs the command on the reservation service and renders the answer. Every error goes through
/// `APIError` and `HTTPResponse.error`, the one place codes become bytes.
public final class GatewayAPI: HTTPResponder {
    public static let maxBodyBytes = 16 * 1024
    public var maxBodyBytes: Int { Self.maxBodyBytes }
    // Fixed refusals, rendered once (the 431 one is handed to every new connection).
    private static let payloadTooLargeAnswer = HTTPResponse.error(.payloadTooLarge)
    private static let requestHeaderTooLargeAnswer = HTTPResponse.error(.requestHeaderTooLarge)
    private static let malformedRequestAnswer = HTTPResponse.error(.invalidRequest("the request is not valid HTTP/1.1"))
    public var payloadTooLarge: HTTPResponse { Self.payloadTooLargeAnswer }
    public var requestHeaderTooLarge: HTTPResponse { Self.requestHeaderTooLargeAnswer }
    public var malformedRequest: HTTPResponse { Self.malformedRequestAnswer }

    let service: ReservationService
    let metrics: GatewayMetrics
    let registry: PrometheusCollectorRegistry?
    let configuration: GatewayConfiguration
    let decoder: RequestDecoder
    /// The HTTP server's connection counts, shown on the metrics page.
    public let connections = HTTPServerStatistics()
    let logger: Logger

    public init(
        service: ReservationService, metrics: GatewayMetrics, registry: PrometheusCollectorRegistry?,
        configuration: GatewayConfiguration, consumers: RequestDecoder.ConsumerAuthentication = .trusted, logger: Logger
    ) {
        self.service = service
        self.metrics = metrics
        self.registry = registry
        self.configuration = configuration
        self.decoder = RequestDecoder(
            adminToken: configuration.adminToken ?? "", webhookSecret: configuration.webhookSecret ?? "",
            defaultHoldSeconds: configuration.holdSeconds, consumers: consumers)
        self.logger = logger
    }

    /// Answers one request on `eventLoop` and hands the answer to `completion` on that loop.
    /// Never fails: errors become their JSON answer here, the one place that happens.
    public func respond(to request: HTTPRequest, on eventLoop: any EventLoop, _ completion: @escaping @Sendable (HTTPResponse) -> Void) {
        let (endpoint, decoded) = decoder.decode(request, now: WallClock.nowSeconds())
        let label = endpoint?.label ?? "unknown"
        switch decoded {
        case .success(.reserve(let reservation)):
            // A room this gateway knows, and no admission that could pass: the script's 403, without
            // Redis. With an Idempotency-Key the script answers (a grant stored under it is replayed),
            // and the sold-out memory is not asked (it would answer sold_out, not the script's 403).
            let room = service.roomCheck(reservation)
            if room == .refused, reservation.idempotencyKey == nil {
                finish(.success(reserveAnswer(.admissionRequired, reservation)), route: label, completion)
                return
            }
            let memory = room == .refused ? .ask : service.soldOutCheck(reservation)
            if memory == .soldOut, reservation.idempotencyKey == nil {
                // The answer a flash sale sends most, from the sold-out memory: no Redis, no closure.
                finish(.success(reserveAnswer(.soldOut, reservation)), route: label, completion)
                return
            }
            // The hot path: the script's reply becomes the answer directly, no future chain.
            service.reserve(reservation, checked: memory, on: eventLoop) { result in
                self.finish(result.map { self.reserveAnswer($0, reservation) }, route: label, completion)
            }
        case .success(.queueStatus(let basketId, let ticket, let consumerId)):
            // Polls come by the million: answered from the room cache with no future chain.
            service.queueStatus(basketId, ticket: ticket, consumerId: consumerId, on: eventLoop) { result in
                self.finish(result.map { .json(.ok, $0.json()) }, route: label, completion)
            }
        case .success(let command):
            execute(command, on: eventLoop).whenComplete { self.finish($0, route: label, completion) }
        case .failure(let error):
            if case .reserve = endpoint { metrics.reservation(.rejected) }
            if case .invalidSignature = error { metrics.webhook(.invalidSignature) }
            finish(.failure(error), route: label, completion)
        }
    }

    /// Every answer leaves through here: an error becomes its JSON answer, and the request is
    /// counted by route and status.
    private func finish(_ result: Result<HTTPResponse, any Error>, route: String, _ completion: (HTTPResponse) -> Void) {
        let response: HTTPResponse
        switch result {
        case .success(let answer):
            response = answer
        case .failure(let error):
            let apiError = APIError(error)
            if case .internalError = apiError {
                logger.error("request failed", metadata: ["route": "\(route)", "error": "\(error)"])
            } else if case .unavailable = apiError {
                metrics.unavailable()
            }
            response = HTTPResponse.error(apiError)
        }
        metrics.request(route: route, status: Int(response.status.code))
        completion(response)
    }

    private func execute(_ command: RequestDecoder.Command, on eventLoop: any EventLoop) -> EventLoopFuture<HTTPResponse> {
        switch command {
        case .health:
            return eventLoop.makeSucceededFuture(.json(.ok, Array(#"{"status":"ok"}"#.utf8)))
        case .ready:
            return readiness(on: eventLoop)
        case .metrics:
            return eventLoop.makeSucceededFuture(metricsPage())
        case .openapi:
            return eventLoop.makeSucceededFuture(Self.openAPIDocument)
        case .createBasket(let basketId, let stock, let settings):
            return service.createBasket(basketId, stock: stock, settings: settings, on: eventLoop)
                .map { .json(.created, $0.json(basketId: basketId)) }
        case .updateBasket(let basketId, let change):
            return service.updateBasket(basketId, change: change, on: eventLoop).map { .json(.ok, $0.json(basketId: basketId)) }
        case .getBasket(let basketId):
            return service.basketWithRoom(basketId, on: eventLoop).map { .json(.ok, $0.json(basketId: basketId, room: $1)) }
        case .adjustStock(let basketId, let delta):
            return service.adjustStock(basketId, delta: delta, on: eventLoop).map { .json(.ok, $0.json(basketId: basketId)) }
        case .reserve(let request):
            return service.reserve(request, on: eventLoop).map { self.reserveAnswer($0, request) }
        case .getReservation(let reservationId, let requester):
            return service.reservation(reservationId, for: requester, on: eventLoop).map { .json(.ok, $0.json(reservationId: reservationId)) }
        case .cancelReservation(let reservationId, let requester):
            return service.cancel(reservationId, for: requester, on: eventLoop).map { .json(.ok, $0.json(reservationId: reservationId)) }
        case .payment(let event):
            return payment(event, on: eventLoop)
        case .joinQueue(let basketId, let consumerId):
            return service.joinQueue(basketId, consumerId: consumerId, on: eventLoop).map { .json(.ok, $0.json()) }
        case .queueStatus(let basketId, let ticket, let consumerId):
            // (`respond` answers polls itself; this is the same answer through a future.)
            let promise = eventLoop.makePromise(of: HTTPResponse.self)
            service.queueStatus(basketId, ticket: ticket, consumerId: consumerId, on: eventLoop) { result in
                promise.completeWith(result.map { .json(.ok, $0.json()) })
            }
            return promise.futureResult
        case .queuePage:
            return eventLoop.makeSucceededFuture(QueuePage.response)
        }
    }

    /// docs/openapi.yaml, embedded at build time.
    static let openAPIDocument: HTTPResponse = {
        let text = EmbeddedDocs.sources.first { $0.key == "openapi" }?.value ?? ""
        return HTTPResponse(status: .ok, body: Array(text.utf8), contentType: "application/yaml")
    }()

    /// A reserve outcome as its answer (201, or the refusal's error answer), counted.
    private func reserveAnswer(_ outcome: ReserveCall.Outcome, _ request: ReservationService.ReserveRequest) -> HTTPResponse {
        let refusal: APIError
        switch outcome {
        case .granted(let reservationId, let expiresAt, let remaining):
            metrics.reservation(.granted)
            var writer = JSONWriter(capacity: 256)
            writer.field("reservationId", reservationId)
            writer.field("basketId", request.basketId)
            writer.field("consumerId", request.consumerId)
            writer.field("quantity", request.quantity)
            writer.field("status", "pending")
            writer.field("expiresAt", RFC3339.format(milliseconds: expiresAt))
            writer.field("remaining", remaining)
            return .json(.created, writer.finish())
        case .soldOut, .soldOutReplayed, .soldOutClosingIn:
            metrics.reservation(.soldOut)
            refusal = .soldOut
        case .saleNotOpen(let opensAt, let milliseconds):
            metrics.reservation(.rejected)
            // whole seconds until it opens, at least 1, and never a number a client cannot use
            refusal = .saleNotOpen(opensAtMilliseconds: opensAt, retryAfterSeconds: max(1, (min(milliseconds, 400_000_000_000) + 999) / 1000))
        case .salePaused:
            metrics.reservation(.rejected)
            refusal = .salePaused
        case .saleClosed:
            metrics.reservation(.rejected)
            refusal = .saleClosed
        case .admissionRequired:
            metrics.reservation(.rejected)
            refusal = .admissionRequired
        case .limitExceeded:
            metrics.reservation(.limitExceeded)
            refusal = .limitExceeded
        case .basketNotFound:
            metrics.reservation(.basketNotFound)
            refusal = .basketNotFound
        case .rateLimited(let milliseconds):
            metrics.reservation(.rateLimited)
            refusal = .rateLimited(retryAfterSeconds: (milliseconds + 999) / 1000)
        case .idempotencyKeyReused:
            metrics.reservation(.rejected)
            refusal = .idempotencyKeyReused
        case .unavailable:
            metrics.reservation(.rejected)
            refusal = APIError(ReservationError.underRepair)
        }
        if case .unavailable = refusal { metrics.unavailable() }
        return HTTPResponse.error(refusal)
    }

    private func payment(_ event: PaymentCall.Event, on eventLoop: any EventLoop) -> EventLoopFuture<HTTPResponse> {
        service.applyPayment(event, on: eventLoop).map { outcome in
            guard let outcome else {
                self.metrics.webhook(.duplicate)
                return .json(.ok, Array(#"{"status":"duplicate"}"#.utf8))
            }
            self.metrics.webhook(.processed(outcome))
            var writer = JSONWriter(capacity: 64)
            writer.field("status", "processed")
            writer.field("outcome", outcome.rawValue)
            return .json(.ok, writer.finish())
        }
    }

    private func readiness(on eventLoop: any EventLoop) -> EventLoopFuture<HTTPResponse> {
        service.checkStore(on: eventLoop).map { _ -> HTTPResponse in
            .json(.ok, Array(#"{"status":"ready"}"#.utf8))
        }.flatMapErrorThrowing { _ in
            throw APIError.unavailable("redis does not answer")
        }
    }

    private func metricsPage() -> HTTPResponse {
        var bytes: [UInt8] = []
        registry?.emit(into: &bytes)
        // The HTTP server's own counts, read at scrape time.
        var text = "# TYPE gateway_connections_open gauge\ngateway_connections_open \(connections.openConnections)\n"
        text += "# TYPE gateway_connections_refused_total counter\ngateway_connections_refused_total \(connections.refusedConnections)\n"
        text += "# TYPE gateway_connections_timed_out_total counter\ngateway_connections_timed_out_total \(connections.timedOutConnections)\n"
        let pipelining = service.redisPipelining
        text += "# TYPE gateway_redis_batches_total counter\ngateway_redis_batches_total \(pipelining.batches)\n"
        text += "# TYPE gateway_redis_commands_total counter\ngateway_redis_commands_total \(pipelining.commands)\n"
        let coalescing = service.reserveCoalescing
        text += "# TYPE gateway_reserve_calls_total counter\ngateway_reserve_calls_total \(coalescing.calls)\n"
        text += "# TYPE gateway_reserve_call_requests_total counter\ngateway_reserve_call_requests_total \(coalescing.requests)\n"
        let waits = service.redisReplicationWaits
        text += "# TYPE gateway_redis_waits_total counter\ngateway_redis_waits_total \(waits.waits)\n"
        text += "# TYPE gateway_redis_wait_timeouts_total counter\ngateway_redis_wait_timeouts_total \(waits.timeouts)\n"
        text += "# TYPE gateway_redis_held_replies_total counter\ngateway_redis_held_replies_total \(waits.heldReplies)\n"
        bytes.append(contentsOf: text.utf8)
        return HTTPResponse(status: .ok, body: bytes, contentType: "text/plain; version=0.0.4; charset=utf-8")
    }
}
