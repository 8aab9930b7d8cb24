public import NIOHTTP1
import RedisClient
import ReservationScripts

/// Every error the HTTP API can answer, with its status and contract code. Errors of the other
/// layers (Redis, JSON) are mapped to these in one place: `APIError.init(_:)`.
public enum APIError: Error, Equatable, Sendable {
    case invalidRequest(String)
    case unauthorized
    case invalidSignature
    case basketNotFound
    case reservationNotFound
    case basketExists
    case insufficientStock
    case capacityExceeded
    case soldOut
    case limitExceeded
    case reservationExpired
    case payloadTooLarge
    case idempotencyKeyReused
    case rateLimited(retryAfterSeconds: Int)
    case unavailable(String)
    case notFound
    case methodNotAllowed(allowed: String)
    case requestHeaderTooLarge
    case internalError
    /// The sale opens at `opensAtMilliseconds` (Redis time), `retryAfterSeconds` from now.
    /// A consumer token is missing, malformed, forged or expired (token mode).
    case invalidToken
    /// The body names another consumer than the token.
    case consumerMismatch
    case saleNotOpen(opensAtMilliseconds: Int64, retryAfterSeconds: Int)
    case salePaused
    case saleClosed
    /// The basket has a waiting room and the request carries no valid, unexpired admission.
    case admissionRequired
    /// A queue request on a basket without a waiting room.
    case noWaitingRoom
    /// A waiting-room ticket that is forged, expired, of another basket or room, or of another consumer.
    case ticketNotFound

    public var status: HTTPResponseStatus {
        switch self {
        case .invalidRequest: return .badRequest
        case .unauthorized, .invalidSignature, .invalidToken: return .unauthorized
        case .consumerMismatch, .admissionRequired: return .forbidden
        case .basketNotFound, .reservationNotFound, .notFound, .ticketNotFound: return .notFound
        case .basketExists, .insufficientStock, .capacityExceeded, .soldOut, .limitExceeded, .reservationExpired, .saleNotOpen, .salePaused,
            .saleClosed, .noWaitingRoom:
            return .conflict
        case .payloadTooLarge: return .payloadTooLarge
        case .idempotencyKeyReused: return .unprocessableEntity
        case .rateLimited: return .tooManyRequests
        case .unavailable: return .serviceUnavailable
        case .methodNotAllowed: return .methodNotAllowed
        case .requestHeaderTooLarge: return .requestHeaderFieldsTooLarge
        case .internalError: return .internalServerError
        }
    }

    public var code: String {
        switch self {
        case .invalidRequest: return "invalid_request"
        case .unauthorized: return "unauthorized"
        case .invalidSignature: return "invalid_signature"
        case .basketNotFound: return "basket_not_found"
        case .reservationNotFound: return "reservation_not_found"
        case .basketExists: return "basket_exists"
        case .insufficientStock: return "insufficient_stock"
        case .capacityExceeded: return "capacity_exceeded"
        case .soldOut: return "sold_out"
        case .limitExceeded: return "limit_exceeded"
        case .reservationExpired: return "reservation_expired"
        case .payloadTooLarge: return "payload_too_large"
        case .idempotencyKeyReused: return "idempotency_key_reused"
        case .rateLimited: return "rate_limited"
        case .unavailable: return "unavailable"
        case .notFound: return "not_found"
        case .methodNotAllowed: return "method_not_allowed"
        case .requestHeaderTooLarge: return "request_header_too_large"
        case .internalError: return "internal_error"
        case .invalidToken: return "invalid_token"
        case .consumerMismatch: return "consumer_mismatch"
        case .saleNotOpen: return "sale_not_open"
        case .salePaused: return "sale_paused"
        case .saleClosed: return "sale_closed"
        case .admissionRequired: return "admission_required"
        case .noWaitingRoom: return "no_waiting_room"
        case .ticketNotFound: return "ticket_not_found"
        }
    }

    public var message: String {
        switch self {
        case .invalidRequest(let detail): return detail
        case .unauthorized: return "a valid admin bearer token is required"
        case .invalidSignature: return "the webhook signature is missing, wrong or too old"
        case .basketNotFound: return "no basket has this id"
        case .reservationNotFound: return "no reservation has this id"
        case .basketExists: return "a basket with this id already exists"
        case .insufficientStock: return "the available stock cannot fall below zero"
        case .capacityExceeded: return "a basket holds at most \(ReservationService.maxCapacity) units"
        case .soldOut: return "not enough units are left"
        case .limitExceeded: return "this consumer would hold more than the basket allows"
        case .reservationExpired: return "the reservation's hold has expired"
        case .payloadTooLarge: return "the request body is larger than 16 KiB"
        case .idempotencyKeyReused: return "this Idempotency-Key was used with a different body"
        case .rateLimited: return "too many reservation attempts; retry later"
        case .unavailable(let detail): return detail
        case .notFound: return "no such endpoint"
        case .methodNotAllowed(let allowed): return "this endpoint takes \(allowed)"
        case .requestHeaderTooLarge: return "the request line and headers are larger than the gateway accepts"
        case .internalError: return "internal error"
        case .invalidToken: return "a valid consumer token (Authorization: Bearer) is required"
        case .consumerMismatch: return "the body names another consumer than the token"
        case .saleNotOpen: return "the sale has not opened yet"
        case .salePaused: return "the sale is paused; retry later"
        case .saleClosed: return "the sale is closed"
        case .admissionRequired: return "this sale has a waiting room: reserve with the Admission-Token it gave you"
        case .noWaitingRoom: return "this basket has no waiting room"
        case .ticketNotFound: return "no ticket of this waiting room matches; join again"
        }
    }

    /// Maps a lower layer's error to the answer a client gets: the service's refusals to their
    /// codes; Redis being unreachable or slow to a 503 (retry is safe: a call that failed in
    /// flight is answered from idempotency records or shows up on a GET); anything else
    /// unexpected (a store reply of the wrong shape) to a 500 that names nothing internal.
    public init(_ error: any Error) {
        switch error {
        case let error as APIError: self = error
        case let error as ReservationError:
            switch error {
            case .basketNotFound: self = .basketNotFound
            case .basketExists: self = .basketExists
            case .insufficientStock: self = .insufficientStock
            case .capacityExceeded: self = .capacityExceeded
            case .reservationNotFound: self = .reservationNotFound
            case .reservationExpired: self = .reservationExpired
            case .underRepair: self = .unavailable("the basket is being repaired; retry shortly")
            case .invalidWindow: self = .invalidRequest("closesAt must be after opensAt")
            case .noWaitingRoom: self = .noWaitingRoom
            case .saleClosed: self = .saleClosed
            case .ticketNotFound: self = .ticketNotFound
            case .inconsistentStore: self = .internalError
            }
        case let error as RedisError:
            switch error {
            case .overloaded:
                self = .unavailable("the reservation store is overloaded; retry shortly")
            case .notReplicated:
                // REDIS_WAIT_REPLICAS: the change was made on the primary, but its replicas did
                // not confirm it in time. It may stand or be lost with the primary; a retry with
                // the same Idempotency-Key (or event id) answers what happened.
                self = .unavailable("the change is not yet confirmed by the store's replicas; retry with the same Idempotency-Key")
            case _ where error.isTransient:
                self = .unavailable("the reservation store is unavailable; retry shortly")
            default:
                self = .internalError
            }
        default:
            self = .internalError
        }
    }
}
