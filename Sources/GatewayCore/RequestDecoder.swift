public import ConsumerTokens
public import HTTPServing
import NIOCore
import NIOHTTP1
public import ReservationCore
public import ReservationScripts

/// Turns an HTTP request into a validated command, or into the error to answer: routing, the
/// admin token, the webhook signature, the Idempotency-Key, JSON bodies, ids and number ranges.
/// No I/O and no clock of its own (`now` is given), so it is tested and fuzzed on its own
/// (`Tests/Fuzz`); every value from outside is range-checked here before anything uses it.
public struct RequestDecoder: Sendable {
    public enum Command: Sendable, Equatable {
        case health, ready, metrics, openapi
        case createBasket(basketId: String, stock: Int, settings: BasketSettings)
        case getBasket(basketId: String)
        case updateBasket(basketId: String, change: UpdateBasketCall.Change)
        case adjustStock(basketId: String, delta: Int)
        case reserve(ReservationService.ReserveRequest)
        case getReservation(reservationId: String, requester: ReservationService.Requester)
        case cancelReservation(reservationId: String, requester: ReservationService.Requester)
        case payment(PaymentCall.Event)
        case joinQueue(basketId: String, consumerId: String)
        /// `consumerId`: the token's consumer (token mode), whom the ticket must name; nil in trusted mode.
        case queueStatus(basketId: String, ticket: String, consumerId: String?)
        case queuePage
    }

    /// The largest stock, delta, quantity or per-consumer limit a request may carry.
    public static let maxUnits = ReservationService.maxCapacity
    static let paymentTypes: Set<String> = ["payment.succeeded", "payment.failed"]

    /// How consumers are identified (`CONSUMER_AUTH`).
    public enum ConsumerAuthentication: Sendable {
        /// A trusted front end names the consumer in the body; a reservation's id is what lets
        /// its holder read and cancel it.
        case trusted
        /// A signed consumer token (`Authorization: Bearer`) names the consumer; a reservation is
        /// read and cancelled only with its consumer's token, or the admin token.
        case token(ConsumerTokenVerifier)
    }

    private let adminAuthorization: [UInt8]
    private let verifier: WebhookVerifier
    private let defaultHoldSeconds: Int
    private let consumers: ConsumerAuthentication

    public init(adminToken: String, webhookSecret: String, defaultHoldSeconds: Int, consumers: ConsumerAuthentication = .trusted) {
        self.adminAuthorization = Array(("Bearer " + adminToken).utf8)
        self.verifier = WebhookVerifier(secret: webhookSecret)
        self.defaultHoldSeconds = defaultHoldSeconds
        self.consumers = consumers
    }

    /// The endpoint (nil if the route is unknown) and the command or the error to answer.
    public func decode(_ request: HTTPRequest, now: Int64) -> (endpoint: Endpoint?, result: Result<Command, APIError>) {
        switch Router.route(method: request.method, target: request.uri) {
        case .failure(let error):
            return (nil, .failure(error))
        case .success(let endpoint):
            do {
                return (endpoint, .success(try command(endpoint, request, now: now)))
            } catch let error as APIError {
                return (endpoint, .failure(error))
            } catch {
                return (endpoint, .failure(.internalError))
            }
        }
    }

    private func command(_ endpoint: Endpoint, _ request: HTTPRequest, now: Int64) throws -> Command {
        switch endpoint {
        case .health: return .health
        case .ready: return .ready
        case .metrics: return .metrics
        case .openapi: return .openapi
        case .createBasket(let basketId):
            try requireAdmin(request)
            try requireId(basketId, "basketId")
            let body = try jsonObject(request)
            let stock = try integer(body, "stock", in: 0...Self.maxUnits)
            let settings = BasketSettings(
                holdSeconds: try integer(body, "holdSeconds", default: defaultHoldSeconds, in: 1...86_400),
                maxPerConsumer: try integer(body, "maxPerConsumer", default: 1, in: 1...Self.maxUnits),
                opensAtMilliseconds: try time(body, "opensAt") ?? nil, closesAtMilliseconds: try time(body, "closesAt") ?? nil,
                waitingRoom: try waitingRoom(body) ?? nil)
            if let opens = settings.opensAtMilliseconds, let closes = settings.closesAtMilliseconds, closes <= opens {
                throw APIError.invalidRequest("closesAt must be after opensAt")
            }
            return .createBasket(basketId: basketId, stock: stock, settings: settings)
        case .getBasket(let basketId):
            try requireId(basketId, "basketId")
            return .getBasket(basketId: basketId)
        case .updateBasket(let basketId):
            try requireAdmin(request)
            try requireId(basketId, "basketId")
            let body = try jsonObject(request)
            var change = UpdateBasketCall.Change()
            if body["holdSeconds"] != nil { change.holdSeconds = try integer(body, "holdSeconds", in: 1...86_400) }
            if body["maxPerConsumer"] != nil { change.maxPerConsumer = try integer(body, "maxPerConsumer", in: 1...Self.maxUnits) }
            change.opensAtMilliseconds = try time(body, "opensAt")
            change.closesAtMilliseconds = try time(body, "closesAt")
            if let raw = body["paused"] {
                guard case .bool(let paused) = raw else { throw APIError.invalidRequest("paused must be true or false") }
                change.paused = paused
            }
            change.waitingRoom = try waitingRoom(body)
            if let opens = change.opensAtMilliseconds ?? nil, let closes = change.closesAtMilliseconds ?? nil, closes <= opens {
                throw APIError.invalidRequest("closesAt must be after opensAt")
            }
            return .updateBasket(basketId: basketId, change: change)
        case .adjustStock(let basketId):
            try requireAdmin(request)
            try requireId(basketId, "basketId")
            let body = try jsonObject(request)
            let delta = try integer(body, "delta", in: -Self.maxUnits...Self.maxUnits)
            guard delta != 0 else { throw APIError.invalidRequest("delta must not be 0") }
            return .adjustStock(basketId: basketId, delta: delta)
        case .reserve(let basketId):
            try requireId(basketId, "basketId")
            // Who asks comes first: a request without a valid token is refused before its body is read.
            let tokenConsumer = try tokenConsumer(request, now: now)
            let body = try jsonObject(request)
            let consumerId: String
            if let tokenConsumer {
                // The consumer is the token's `sub`; a body naming another is refused.
                if let named = body["consumerId"], named.stringValue != tokenConsumer { throw APIError.consumerMismatch }
                consumerId = tokenConsumer
            } else {
                consumerId = try string(body, "consumerId")
                try requireId(consumerId, "consumerId")
            }
            let quantity = try integer(body, "quantity", default: 1, in: 1...Self.maxUnits)
            let key = request.headers.first(name: "idempotency-key")
            if let key, !Identifier.isValidKey(key) {
                throw APIError.invalidRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
            }
            return .reserve(
                ReservationService.ReserveRequest(
                    basketId: basketId, asked: ReservationRequest(consumerId: consumerId, quantity: quantity), idempotencyKey: key,
                    admissionToken: Self.admissionToken(request)))
        case .joinQueue(let basketId):
            try requireId(basketId, "basketId")
            let tokenConsumer = try tokenConsumer(request, now: now)
            // In token mode the body may be empty; a body naming another consumer is refused.
            let hasBody = (request.body?.readableBytes ?? 0) > 0
            let body: JSONValue? = tokenConsumer == nil || hasBody ? try jsonObject(request) : nil
            if let tokenConsumer {
                if let named = body?["consumerId"], named.stringValue != tokenConsumer { throw APIError.consumerMismatch }
                return .joinQueue(basketId: basketId, consumerId: tokenConsumer)
            }
            let consumerId = try string(body ?? .null, "consumerId")
            try requireId(consumerId, "consumerId")
            return .joinQueue(basketId: basketId, consumerId: consumerId)
        case .queueStatus(let basketId, let ticket):
            let tokenConsumer = try tokenConsumer(request, now: now)
            try requireId(basketId, "basketId")
            return .queueStatus(basketId: basketId, ticket: ticket, consumerId: tokenConsumer)
        case .queuePage(let basketId):
            try requireId(basketId, "basketId")
            return .queuePage
        case .getReservation(let reservationId):
            let requester = try requester(request, now: now)
            try requireId(reservationId, "reservationId")
            return .getReservation(reservationId: reservationId, requester: requester)
        case .cancelReservation(let reservationId):
            let requester = try requester(request, now: now)
            try requireId(reservationId, "reservationId")
            return .cancelReservation(reservationId: reservationId, requester: requester)
        case .webhook:
            return .payment(try payment(request, now: now))
        }
    }

    /// The signature is checked over the raw bytes before the body is parsed at all.
    private func payment(_ request: HTTPRequest, now: Int64) throws -> PaymentCall.Event {
        let raw = request.body.map { Array($0.readableBytesView) } ?? []
        guard verifier.isValid(signatureHeader: request.headers.first(name: "webhook-signature"), body: raw, now: now) else {
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
        return PaymentCall.Event(
            eventId: eventId, type: type, reservationId: reservationId, paymentId: paymentId, amountCents: amount, currency: currency)
    }

    // MARK: pieces

    /// In token mode, the consumer the request's token names (401 `invalid_token` without a valid
    /// one); nil in trusted mode.
    private func tokenConsumer(_ request: HTTPRequest, now: Int64) throws -> String? {
        try tokenConsumer(Self.authorization(request), now: now)
    }

    private func tokenConsumer(_ authorization: Authorization, now: Int64) throws -> String? {
        guard case .token(let tokens) = consumers else { return nil }
        // One Authorization header: with two, which one a proxy added is anyone's guess.
        guard case .one(let header) = authorization,
            let token = ConsumerTokenVerifier.bearer(header)
        else {
            throw APIError.invalidToken
        }
        switch tokens.verify(token, nowSeconds: now) {
        case .success(let consumer): return consumer.consumerId
        case .failure: throw APIError.invalidToken
        }
    }

    /// Who reads or cancels a reservation: in token mode the admin (its bearer token) or the
    /// token's consumer; in trusted mode whoever holds the id.
    private func requester(_ request: HTTPRequest, now: Int64) throws -> ReservationService.Requester {
        guard case .token = consumers else { return .holderOfTheId }
        let authorization = Self.authorization(request)
        if case .one(let header) = authorization, constantTimeEquals(Array(header.utf8), adminAuthorization) { return .admin }
        return .consumer(try tokenConsumer(authorization, now: now) ?? "")
    }

    private func requireAdmin(_ request: HTTPRequest) throws {
        guard case .one(let header) = Self.authorization(request), constantTimeEquals(Array(header.utf8), adminAuthorization) else {
            throw APIError.unauthorized
        }
    }

    enum Authorization {
        case none
        case one(String)
        case several
    }

    /// The request's `Authorization` header, found in one pass over the headers comparing bytes
    /// (NIO's `canonicalForm` lookup split every value on commas: about 1.7 µs a request). A
    /// comma inside the one header is left to the caller: no token and no admin value has one.
    static func authorization(_ request: HTTPRequest) -> Authorization {
        var found: Authorization = .none
        for (name, value) in request.headers where name.utf8.count == 13 {
            // ASCII letters compared with their case bit set ("authorization" has no other byte).
            guard name.utf8.elementsEqual("authorization".utf8, by: { $0 | 0x20 == $1 }) else { continue }
            if case .none = found { found = .one(value) } else { return .several }
        }
        return found
    }

    /// The request's `Admission-Token`: nil when absent, several, or longer than any pass we sign
    /// (the service checks its signature, basket and consumer; a bad one counts as none).
    static func admissionToken(_ request: HTTPRequest) -> String? {
        var found: String?
        for (name, value) in request.headers where name.utf8.count == 15 {
            guard name.utf8.elementsEqual("admission-token".utf8, by: { $0 | 0x20 == $1 }) else { continue }
            if found != nil { return nil }
            found = value
        }
        guard let found, found.utf8.count <= 1024 else { return nil }
        return found
    }

    /// `waitingRoom`: nil when absent, `.some(nil)` for `null`, else its settings in range.
    private func waitingRoom(_ object: JSONValue) throws -> WaitingRoomSettings?? {
        guard let raw = object["waitingRoom"] else { return nil }
        if raw == .null { return .some(nil) }
        guard case .object = raw else { throw APIError.invalidRequest("waitingRoom must be an object or null") }
        let perMinute = try integer(raw, "admitPerMinute", in: WaitingRoomSettings.admitPerMinuteRange)
        let seconds = try integer(
            raw, "admissionSeconds", default: WaitingRoomSettings.defaultAdmissionSeconds, in: WaitingRoomSettings.admissionSecondsRange)
        guard let settings = WaitingRoomSettings(admitPerMinute: perMinute, admissionSeconds: seconds) else {
            throw APIError.invalidRequest("waitingRoom is out of range")
        }
        return .some(settings)
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

    /// An optional RFC 3339 time: nil when absent, `.some(nil)` when `null` (removes it), else its
    /// Unix milliseconds (years 1970 to 9999).
    private func time(_ object: JSONValue, _ name: String) throws -> Int64?? {
        guard let raw = object[name] else { return nil }
        if raw == .null { return .some(nil) }
        guard let text = raw.stringValue, let milliseconds = RFC3339.parse(text), milliseconds <= BasketSettings.latestMilliseconds else {
            throw APIError.invalidRequest("\(name) must be an RFC 3339 date-time (e.g. 2026-12-24T10:00:00Z) or null")
        }
        return .some(milliseconds)
    }

    private func string(_ object: JSONValue, _ name: String) throws -> String {
        guard let value = object[name]?.stringValue else { throw APIError.invalidRequest("\(name) must be a string") }
        return value
    }
}
