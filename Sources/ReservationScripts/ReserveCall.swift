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
    public static let keyNames = ["basket", "reservation", "consumerUnits", "holds", "stream", "idempotency", "rateLimit", "lostBaskets"]
    public static let argumentNames = [
        "basketId", "consumerId", "quantity", "reservationId", "attemptsPerSecond", "fingerprint", "idempotencySeconds",
        "refusalSeconds",
    ]

    public let keys: [String]
    public let arguments: [RedisArgument]

    /// `attemptsPerSecond` 0 turns the rate limit off; without an idempotency key nothing is stored.
    /// `refusalSeconds`: how long a refusal is replayed under its key (a grant: `Retention.idempotencySeconds`);
    /// the default is `Retention.idempotencyRefusalSeconds`.
    public init(
        basketId: String, consumerId: String, quantity: Int, reservationId: String, attemptsPerSecond: Int, idempotencyKey: String?,
        refusalSeconds: Int = 300
    ) {
        let partition = Keyspace.partition(ofBasket: basketId)
        let basketKey = Keyspace.basket(basketId, partition: partition)
        var fingerprint = ""
        var idempotencyRecord = basketKey
        if let idempotencyKey {
            fingerprint = Self.fingerprint(consumerId: consumerId, quantity: quantity)
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
            Keyspace.lostBaskets(partition),
        ]
        arguments = [
            .string(basketId), .string(consumerId), .int(quantity), .string(reservationId), .int(attemptsPerSecond),
            .string(fingerprint), .int(Retention.idempotencySeconds), .int(refusalSeconds),
        ]
    }

    /// What an Idempotency-Key's record holds of the request, so a different body under the
    /// same key is told apart (422).
    public static func fingerprint(consumerId: String, quantity: Int) -> String { consumerId + "\n" + String(quantity) }

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

/// The record an Idempotency-Key left, read without changing anything: what a keyed request on a
/// basket the gateway knows is sold out costs Redis (one read, no write). A stored answer is
/// replayed (a grant still wins over the sold-out memory); with no record nothing is stored, and
/// the request is refused from memory like any other.
public struct ReadIdempotencyCall: CommandCall {
    public struct Record: Sendable, Equatable {
        /// What the first request's body was (`ReserveCall.fingerprint`).
        public var fingerprint: String
        /// Its answer; nil for a record this reader cannot replay (an older gateway's form),
        /// which the script then answers.
        public var answer: ReserveCall.Outcome?

        /// The answer for a request with `fingerprint` (422 for another body), nil: ask the script.
        public func replay(for fingerprint: String) -> ReserveCall.Outcome? {
            fingerprint == self.fingerprint ? answer : .idempotencyKeyReused
        }
    }

    public let keys: [String]
    public let command: [RedisArgument]

    public init(basketId: String, idempotencyKey: String) {
        let partition = Keyspace.partition(ofBasket: basketId)
        let key = Keyspace.idempotency(basketId: basketId, key: idempotencyKey, partition: partition)
        keys = [key]
        command = ["HMGET", .string(key), "fp", "a", "id", "exp", "left"]
    }

    /// nil: no record under the key.
    public static func decode(_ reply: RedisValue) throws -> Record? {
        guard let values = reply.array, values.count == 5 else { throw StoreReplyError("read idempotency", reply) }
        guard let fingerprint = values[0].string else { return nil }
        guard let word = values[1].string else { return Record(fingerprint: fingerprint, answer: nil) }
        if values[2].isNull {
            // A refusal, as the script stores one (only these are ever stored).
            let refusals: [String: ReserveCall.Outcome] = [
                "sold_out": .soldOut, "limit_exceeded": .limitExceeded, "basket_not_found": .basketNotFound,
            ]
            return Record(fingerprint: fingerprint, answer: refusals[word])
        }
        // A grant: decoded, range checks and all, as the script's own reply.
        let answer = try? ReserveCall.decode(.array(Array(values[1...])))
        guard case .granted = answer else { return Record(fingerprint: fingerprint, answer: nil) }
        return Record(fingerprint: fingerprint, answer: answer)
    }
}
