public import RedisClient
public import ReservationCore

/// `lua/basket_create.lua`: create a basket.
public struct CreateBasketCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        case created(BasketState)
        case exists
        /// Redis lost a basket of this id and the reconciler has not rebuilt it yet.
        case unavailable
    }

    public static let script = ReservationScripts.basketCreate
    /// A created basket waits for the replicas; `basket_exists` and `unavailable` do not.
    public static let replication = RedisReplication.when { RedisValue.isAnswer($0, oneOf: "ok") }
    public static let keyNames = ["basket", "stream", "basketIndex", "lostBaskets"]
    public static let argumentNames = ["basketId", "stock", "holdSeconds", "maxPerConsumer"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(basketId: String, stock: Int, holdSeconds: Int, maxPerConsumer: Int) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [
            Keyspace.basket(basketId, partition: partition), Keyspace.stream(partition), Keyspace.basketIndex(partition),
            Keyspace.lostBaskets(partition),
        ]
        arguments = [.string(basketId), .int(stock), .int(holdSeconds), .int(maxPerConsumer)]
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "basket_create")
        switch answer {
        case "ok":
            guard let state = BasketState(values: rest[...]) else { throw StoreReplyError("basket_create", reply) }
            return .created(state)
        case "basket_exists": return .exists
        case "unavailable": return .unavailable
        default: throw StoreReplyError("basket_create", reply)
        }
    }
}

/// `lua/basket_adjust.lua`: change a basket's available stock by a delta.
public struct AdjustBasketCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        case adjusted(BasketState)
        case basketNotFound
        case insufficientStock
        case capacityExceeded
        case unavailable
    }

    public static let script = ReservationScripts.basketAdjust
    /// An adjusted stock waits for the replicas; refusals do not.
    public static let replication = RedisReplication.when { RedisValue.isAnswer($0, oneOf: "ok") }
    public static let keyNames = ["basket", "stream", "lostBaskets"]
    public static let argumentNames = ["basketId", "delta", "maxCapacity"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(basketId: String, delta: Int, maxCapacity: Int) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [Keyspace.basket(basketId, partition: partition), Keyspace.stream(partition), Keyspace.lostBaskets(partition)]
        arguments = [.string(basketId), .int(delta), .int(maxCapacity)]
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "basket_adjust")
        switch answer {
        case "ok":
            guard let state = BasketState(values: rest[...]) else { throw StoreReplyError("basket_adjust", reply) }
            return .adjusted(state)
        case "basket_not_found": return .basketNotFound
        case "insufficient_stock": return .insufficientStock
        case "capacity_exceeded": return .capacityExceeded
        case "unavailable": return .unavailable
        default: throw StoreReplyError("basket_adjust", reply)
        }
    }
}

/// A basket's state, read with one HMGET (nil: no such basket).
public struct ReadBasketCall: CommandCall {
    public let keys: [String]
    public var command: [RedisArgument] {
        ["HMGET", .string(keys[0])] + BasketField.allCases.map { .string($0.rawValue) }
    }

    public init(basketId: String) {
        keys = [Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId))]
    }

    public static func decode(_ reply: RedisValue) throws -> BasketState? {
        guard let values = reply.array, values.count == BasketField.allCases.count else { throw StoreReplyError("read basket", reply) }
        if values[0].isNull { return nil }
        guard let state = BasketState(values: values[...]) else { throw StoreReplyError("read basket", reply) }
        return state
    }
}

/// Whether Redis lost a basket the reconciler has not rebuilt yet (asked only when a read found
/// none: such a basket answers 503, not 404).
public struct IsLostBasketCall: CommandCall {
    public let keys: [String]
    public let command: [RedisArgument]

    public init(basketId: String) {
        keys = [Keyspace.lostBaskets(Keyspace.partition(ofBasket: basketId))]
        command = ["SISMEMBER", .string(keys[0]), .string(basketId)]
    }

    public static func decode(_ reply: RedisValue) throws -> Bool {
        guard let value = reply.int, value == 0 || value == 1 else { throw StoreReplyError("is lost basket", reply) }
        return value == 1
    }
}

/// The ids of a partition's baskets (the set `basket_create` and `repair_basket` add to).
public struct BasketIndexCall: CommandCall {
    public let keys: [String]
    public let command: [RedisArgument]

    public init(partition: Int) {
        keys = [Keyspace.basketIndex(partition)]
        command = ["SMEMBERS", .string(keys[0])]
    }

    public static func decode(_ reply: RedisValue) throws -> [String] {
        guard let values = reply.array else { throw StoreReplyError("basket index", reply) }
        return values.compactMap(\.string)
    }
}
