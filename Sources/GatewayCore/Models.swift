import ReservationCore

/// What `GET /v1/baskets/{id}` and the admin endpoints answer.
public struct BasketView: Sendable, Equatable {
    public var basketId: String
    public var stock: Int
    public var pending: Int
    public var confirmed: Int
    public var capacity: Int
    public var holdSeconds: Int
    public var maxPerConsumer: Int

    func json() -> [UInt8] {
        var writer = JSONWriter()
        writer.field("basketId", basketId)
        writer.field("stock", stock)
        writer.field("pending", pending)
        writer.field("confirmed", confirmed)
        writer.field("capacity", capacity)
        writer.field("holdSeconds", holdSeconds)
        writer.field("maxPerConsumer", maxPerConsumer)
        return writer.finish()
    }
}

/// A reservation as `GET` and `DELETE /v1/reservations/{id}` show it.
public struct ReservationView: Sendable, Equatable {
    public var reservationId: String
    public var basketId: String
    public var consumerId: String
    public var quantity: Int
    public var status: String
    public var expiresAtMilliseconds: Int64
    public var paymentId: String?

    func json() -> [UInt8] {
        var writer = JSONWriter()
        writer.field("reservationId", reservationId)
        writer.field("basketId", basketId)
        writer.field("consumerId", consumerId)
        writer.field("quantity", quantity)
        writer.field("status", status)
        writer.field("expiresAt", RFC3339.format(milliseconds: expiresAtMilliseconds))
        writer.field("paymentId", paymentId)
        return writer.finish()
    }
}

/// The answer to a reservation attempt, exactly as the reserve script returned (and, with an
/// Idempotency-Key, stored) it. Replays decode the same string, so they answer the same bytes.
enum ReserveAnswer: Equatable {
    case granted(reservationId: String, expiresAtMilliseconds: Int64, remaining: Int)
    case refused(APIError)

    init(_ encoded: String) throws {
        let parts = encoded.split(separator: "|", omittingEmptySubsequences: false)
        switch parts.first {
        case "granted":
            guard parts.count == 4, let expires = Int64(parts[2]), let remaining = Int(parts[3]) else {
                throw APIError.internalError
            }
            self = .granted(reservationId: String(parts[1]), expiresAtMilliseconds: expires, remaining: remaining)
        case "sold_out": self = .refused(.soldOut)
        case "limit_exceeded": self = .refused(.limitExceeded)
        case "basket_not_found": self = .refused(.basketNotFound)
        case "idempotency_key_reused": self = .refused(.idempotencyKeyReused)
        case "unavailable": self = .refused(.unavailable("the basket is being repaired; retry shortly"))
        case "rate_limited":
            // A Redis reply, range-checked before any arithmetic: a window is at most a second.
            let milliseconds = min(max(parts.count > 1 ? Int(parts[1]) ?? 1000 : 1000, 1), 60_000)
            self = .refused(.rateLimited(retryAfterSeconds: (milliseconds + 999) / 1000))
        default:
            throw APIError.internalError
        }
    }
}
