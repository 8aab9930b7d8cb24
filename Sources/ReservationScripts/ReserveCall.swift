public import RedisClient
public import ReservationCore

/// `lua/reserve_one.lua`: take units of a basket for a consumer (one request; several of one
/// basket go together as a `ReserveBatchCall`, with the same keys and arguments in its places).
public struct ReserveCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        case granted(reservationId: String, expiresAtMilliseconds: Int64, remaining: Int)
        case soldOut
        /// A sold_out stored under the Idempotency-Key, replayed: the same answer to the client,
        /// but it says nothing of the basket now (the sold-out memory does not learn from it).
        case soldOutReplayed
        case limitExceeded
        case basketNotFound
        /// The basket is out of service for a repair; nothing was recorded.
        case unavailable
        case rateLimited(retryAfterMilliseconds: Int)
        case idempotencyKeyReused
        /// A sale with a closing time sold out: the sold-out memory may not outlive the sale.
        case soldOutClosingIn(milliseconds: Int)
        /// Before the sale opens at `opensAtMilliseconds` (Redis time), `retryAfterMilliseconds` from now.
        case saleNotOpen(opensAtMilliseconds: Int64, retryAfterMilliseconds: Int)
        case salePaused
        case saleClosed
        /// The basket has a waiting room and the request carried no unexpired admission of it.
        case admissionRequired
    }

    public static let script = ReservationScripts.reserveOne
    /// A grant, fresh or replayed under its Idempotency-Key, waits for the replicas; refusals do not
    /// (a coalesced call waits when any of its requests was granted). When too few replicas
    /// acknowledge in time, only the grants fail (`notReplicated`): the refusals of the call are
    /// answered as they would have been in calls of their own.
    public static let replication = RedisReplication.split(anyGranted, unreplicated: markingGrantsUnreplicated)

    /// What a grant's answer becomes in a reply its replicas did not acknowledge in time: an error
    /// element that no script answers (`decodeAnswer` reads it as `RedisError.notReplicated`).
    static let unreplicatedGrant = RedisValue.error("NOTREPLICATED the grant is not yet acknowledged by enough replicas")

    /// A (coalesced) reply with each grant replaced by `unreplicatedGrant`, the other answers kept.
    @Sendable public static func markingGrantsUnreplicated(_ reply: RedisValue) -> RedisValue {
        guard case .array(let answers) = reply else { return reply }
        return .array(answers.map { RedisValue.isAnswer($0, oneOf: "granted") ? unreplicatedGrant : $0 })
    }
    public static let keyNames = ["basket", "consumerUnits", "holds", "stream", "lostBaskets", "partitionMarker", "room"]
    public static let repeatedKeyNames = ["reservation", "idempotency", "rateLimit"]
    public static let argumentNames = ["basketId", "attemptsPerSecond", "idempotencySeconds", "refusalSeconds"]
    public static let repeatedArgumentNames = [
        "consumerId", "quantity", "reservationId", "fingerprint", "admissionExpires", "admissionEpoch",
    ]

    public let basketId: String
    public let attemptsPerSecond: Int
    public let refusalSeconds: Int
    let partition: Int
    /// A call of its own: the basket's keys and arguments, then this request's (built once: the
    /// hot path sends them as they are).
    public let keys: [String]
    public let arguments: [RedisArgument]

    /// This request's own KEYS and ARGV: what a coalesced call (`ReserveBatchCall`) repeats.
    var requestKeys: ArraySlice<String> { keys[Self.keyNames.count...] }
    var requestArguments: ArraySlice<RedisArgument> { arguments[Self.argumentNames.count...] }
    var sharedKeys: ArraySlice<String> { keys[..<Self.keyNames.count] }
    var sharedArguments: ArraySlice<RedisArgument> { arguments[..<Self.argumentNames.count] }

    static func basketKeys(_ basketId: String, partition: Int) -> [String] {
        [
            Keyspace.basket(basketId, partition: partition), Keyspace.consumerUnits(basketId: basketId, partition: partition),
            Keyspace.holds(partition), Keyspace.stream(partition), Keyspace.lostBaskets(partition), Keyspace.partitionMarker(partition),
            Keyspace.room(basketId: basketId, partition: partition),
        ]
    }

    /// `attemptsPerSecond` 0 turns the rate limit off; without an idempotency key nothing is stored.
    /// `refusalSeconds`: how long a refusal is replayed under its key (a grant: `Retention.idempotencySeconds`);
    /// the default is `Retention.idempotencyRefusalSeconds`.
    public init(
        basketId: String, consumerId: String, quantity: Int, reservationId: String, attemptsPerSecond: Int, idempotencyKey: String?,
        refusalSeconds: Int = 300
    ) {
        self.init(
            basketId: basketId, request: ReservationRequest(consumerId: consumerId, quantity: quantity), reservationId: reservationId,
            attemptsPerSecond: attemptsPerSecond, idempotencyKey: idempotencyKey, refusalSeconds: refusalSeconds)
    }

    /// `admission`: the request's verified admission (expiry in Redis ms, and the room's epoch).
    public init(
        basketId: String, request: ReservationRequest, reservationId: String, attemptsPerSecond: Int, idempotencyKey: String?,
        refusalSeconds: Int = 300, admission: (expiresAtMilliseconds: Int64, epoch: String)? = nil
    ) {
        let (consumerId, quantity) = (request.consumerId, request.quantity)
        let partition = Keyspace.partition(ofBasket: basketId)
        self.basketId = basketId
        self.partition = partition
        self.attemptsPerSecond = attemptsPerSecond
        self.refusalSeconds = refusalSeconds
        // the places a request without a key or a limit does not use hold the basket key (one slot)
        let basketKey = Keyspace.basket(basketId, partition: partition)
        var fingerprint = ""
        var idempotencyRecord = basketKey
        if let idempotencyKey {
            fingerprint = request.fingerprint
            idempotencyRecord = Keyspace.idempotency(basketId: basketId, consumerId: consumerId, key: idempotencyKey, partition: partition)
        }
        keys =
            Self.basketKeys(basketId, partition: partition) + [
                Keyspace.reservation(reservationId, partition: partition), idempotencyRecord,
                attemptsPerSecond > 0 ? Keyspace.rateLimit(consumerId: consumerId, partition: partition) : basketKey,
            ]
        arguments = [
            .string(basketId), .int(attemptsPerSecond), .int(Retention.idempotencySeconds), .int(refusalSeconds),
            .string(consumerId), .int(quantity), .string(reservationId), .string(fingerprint),
            .string(admission.map { String($0.expiresAtMilliseconds) } ?? ""), .string(admission?.epoch ?? ""),
        ]
    }

    /// Whether any answer of a (coalesced) call is a grant: the reply is then held for `WAIT`.
    @Sendable public static func anyGranted(_ reply: RedisValue) -> Bool {
        guard case .array(let answers) = reply else { return false }
        return answers.contains { RedisValue.isAnswer($0, oneOf: "granted") }
    }

    /// A call of one: its one answer.
    public static func decode(_ reply: RedisValue) throws -> Outcome {
        guard case .array(let answers) = reply, answers.count == 1 else { throw StoreReplyError("reserve", reply) }
        return try decodeAnswer(answers[0])
    }

    /// One request's answer. `{"failed", message}` (a Redis error of that request's own keys) is
    /// the server's error, as it would be for a call of its own.
    public static func decodeAnswer(_ reply: RedisValue) throws -> Outcome {
        if reply == unreplicatedGrant { throw RedisError.notReplicated }
        let (answer, rest) = try reply.answer(of: "reserve")
        switch answer {
        case "granted":
            guard rest.count == 3, let id = rest[0].string, let expires = rest[1].int, let remaining = rest[2].int else {
                throw StoreReplyError("reserve", reply)
            }
            return .granted(reservationId: id, expiresAtMilliseconds: Int64(expires), remaining: remaining)
        case "sold_out":
            if rest.first?.string == "replay" { return .soldOutReplayed }
            if rest.first?.string == "closes" {
                // Redis's reply, range-checked: at most what a sale may last.
                guard rest.count == 2, let left = rest[1].int, left >= 0 else { throw StoreReplyError("reserve", reply) }
                return .soldOutClosingIn(milliseconds: min(left, 400_000_000_000))
            }
            return .soldOut
        case "sale_not_open":
            guard rest.count == 2, let opens = rest[0].int, let left = rest[1].int, left >= 0 else {
                throw StoreReplyError("reserve", reply)
            }
            // A stored `opens` no basket can have (written behind the gateway's back, past the
            // year 9999): the basket is not served, as for any other corrupt field.
            guard (0...BasketSettings.latestMilliseconds).contains(Int64(opens)) else { return .unavailable }
            return .saleNotOpen(opensAtMilliseconds: Int64(opens), retryAfterMilliseconds: left)
        case "sale_paused": return .salePaused
        case "sale_closed": return .saleClosed
        case "admission_required": return .admissionRequired
        case "limit_exceeded": return .limitExceeded
        case "basket_not_found": return .basketNotFound
        case "unavailable": return .unavailable
        case "idempotency_key_reused": return .idempotencyKeyReused
        case "rate_limited":
            // A Redis reply, range-checked before any arithmetic: a window is at most a second.
            let milliseconds = rest.first?.int ?? 1000
            return .rateLimited(retryAfterMilliseconds: min(max(milliseconds, 1), 60_000))
        case "failed":
            // the message only: Redis's own words about its data, no request's values
            throw RedisError.server(String((rest.first?.string ?? "error").prefix(200)))
        default:
            throw StoreReplyError("reserve", reply)
        }
    }
}

/// `lua/reserve.lua` for several requests of one basket in one call (the gateway's coalescing):
/// decided in the order given, one outcome each, exactly as calls of their own in that order.
public struct ReserveBatchCall: ScriptCall {
    public typealias Outcome = [Result<ReserveCall.Outcome, any Error>]

    /// The most requests in one call: a call runs in Redis as one step, so its length bounds how
    /// long one basket's batch can hold up everything else on that Redis (some 20-30 µs each).
    public static let maxRequests = 64

    public static let script = ReservationScripts.reserve
    public static let replication = ReserveCall.replication
    public static let keyNames = ReserveCall.keyNames
    public static let repeatedKeyNames = ReserveCall.repeatedKeyNames
    public static let argumentNames = ReserveCall.argumentNames
    public static let repeatedArgumentNames = ReserveCall.repeatedArgumentNames

    public let keys: [String]
    public let arguments: [RedisArgument]
    public let count: Int

    /// `requests`: at least one, all of one basket, rate limit and refusal window alike (one
    /// gateway's configuration); anything else is a programming error.
    public init(_ requests: [ReserveCall]) {
        guard let first = requests.first else { preconditionFailure("a reserve call of no request") }
        precondition(requests.count <= Self.maxRequests, "at most \(Self.maxRequests) requests in one call")
        var keys = Array(first.sharedKeys)
        var arguments = Array(first.sharedArguments)
        keys.reserveCapacity(keys.count + requests.count * ReserveCall.repeatedKeyNames.count)
        arguments.reserveCapacity(arguments.count + requests.count * ReserveCall.repeatedArgumentNames.count)
        for request in requests {
            precondition(
                request.basketId == first.basketId && request.attemptsPerSecond == first.attemptsPerSecond
                    && request.refusalSeconds == first.refusalSeconds, "one call decides requests of one basket and configuration")
            keys += request.requestKeys
            arguments += request.requestArguments
        }
        self.keys = keys
        self.arguments = arguments
        self.count = requests.count
    }

    /// One result per request; a reply of another length or shape fails as a whole (every
    /// request of the call gets the error).
    public static func decode(_ reply: RedisValue) throws -> Outcome {
        guard case .array(let answers) = reply, !answers.isEmpty else { throw StoreReplyError("reserve", reply) }
        return answers.map { answer in Result { try ReserveCall.decodeAnswer(answer) } }
    }
}

/// `lua/refuse_sold_out.lua`: a keyed reservation on a basket the gateway knows is sold out:
/// its key's stored answer is replayed, or sold_out is stored under it for the refusal window,
/// without the reservation's work (no basket read, no consumer count, no rate-limit window).
public struct RefuseSoldOutCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        /// The answer for the request (stored now, or replayed).
        case answered(ReserveCall.Outcome)
        /// A record only `reserve.lua` reads: the reserve script answers.
        case ask
    }

    public static let script = ReservationScripts.refuseSoldOut
    /// A grant replayed from the key's record waits for the replicas; a refusal does not.
    public static let replication = RedisReplication.when { RedisValue.isAnswer($0, oneOf: "granted") }
    public static let keyNames = ["idempotency"]
    public static let argumentNames = ["fingerprint", "refusalSeconds"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(basketId: String, request: ReservationRequest, idempotencyKey: String, refusalSeconds: Int) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [Keyspace.idempotency(basketId: basketId, consumerId: request.consumerId, key: idempotencyKey, partition: partition)]
        arguments = [.string(request.fingerprint), .int(refusalSeconds)]
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        if reply.array?.first?.string == "ask" { return .ask }
        let outcome = try ReserveCall.decodeAnswer(reply)
        switch outcome {
        case .granted, .soldOut, .soldOutReplayed, .limitExceeded, .basketNotFound, .idempotencyKeyReused, .saleClosed:
            return .answered(outcome)
        case .unavailable, .rateLimited, .soldOutClosingIn, .saleNotOpen, .salePaused, .admissionRequired:
            throw StoreReplyError("refuse_sold_out", reply)
        }
    }
}
