public import RedisClient
import ReservationCore

/// `lua/reserve.lua`: take units of a basket for a consumer.
public struct ReserveCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        case granted(reservationId: String, expiresAtMilliseconds: Int64, remaining: Int)
        case soldOut
        case limitExceeded
        case basketNotFound
        /// The basket is out of service for a repair; nothing was recorded.
        case unavailable
        case rateLimited(retryAfterMilliseconds: Int)
        case idempotencyKeyReused
    }

    public static let script = ReservationScripts.reserve
    public static let keyNames = ["basket", "reservation", "consumerUnits", "holds", "stream", "idempotency", "rateLimit"]
    public static let argumentNames = [
        "basketId", "consumerId", "quantity", "reservationId", "attemptsPerSecond", "fingerprint", "idempotencySeconds",
    ]

    public let keys: [String]
    public let arguments: [RedisArgument]

    /// `attemptsPerSecond` 0 turns the rate limit off; without an idempotency key nothing is stored.
    public init(basketId: String, consumerId: String, quantity: Int, reservationId: String, attemptsPerSecond: Int, idempotencyKey: String?) {
        let partition = Keyspace.partition(ofBasket: basketId)
        let basketKey = Keyspace.basket(basketId, partition: partition)
        var fingerprint = ""
        var idempotencyRecord = basketKey
        if let idempotencyKey {
            fingerprint = consumerId + "\n" + String(quantity)
            idempotencyRecord = Keyspace.idempotency(basketId: basketId, key: idempotencyKey, partition: partition)
        }
        keys = [
            basketKey,
            Keyspace.reservation(reservationId, partition: partition),
            Keyspace.consumerUnits(basketId: basketId, partition: partition),
            Keyspace.holds(partition),
            Keyspace.stream(partition),
            idempotencyRecord,
            attemptsPerSecond > 0 ? Keyspace.rateLimit(consumerId: consumerId, partition: partition) : basketKey,
        ]
        arguments = [
            .string(basketId), .string(consumerId), .int(quantity), .string(reservationId), .int(attemptsPerSecond),
            .string(fingerprint), .int(Retention.idempotencySeconds),
        ]
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "reserve")
        switch answer {
        case "granted":
            guard rest.count == 3, let id = rest[0].string, let expires = rest[1].int, let remaining = rest[2].int else {
                throw StoreReplyError("reserve", reply)
            }
            return .granted(reservationId: id, expiresAtMilliseconds: Int64(expires), remaining: remaining)
        case "sold_out": return .soldOut
        case "limit_exceeded": return .limitExceeded
        case "basket_not_found": return .basketNotFound
        case "unavailable": return .unavailable
        case "idempotency_key_reused": return .idempotencyKeyReused
        case "rate_limited":
            // A Redis reply, range-checked before any arithmetic: a window is at most a second.
            let milliseconds = rest.first?.int ?? 1000
            return .rateLimited(retryAfterMilliseconds: min(max(milliseconds, 1), 60_000))
        default:
            throw StoreReplyError("reserve", reply)
        }
    }
}
