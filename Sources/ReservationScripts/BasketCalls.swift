public import RedisClient
public import ReservationCore

/// `lua/basket_create.lua`: create a basket.
public struct CreateBasketCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        case created(BasketState)
        case exists
    }

    public static let script = ReservationScripts.basketCreate
    public static let keyNames = ["basket", "stream", "basketIndex"]
    public static let argumentNames = ["basketId", "stock", "holdSeconds", "maxPerConsumer"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(basketId: String, stock: Int, holdSeconds: Int, maxPerConsumer: Int) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [Keyspace.basket(basketId, partition: partition), Keyspace.stream(partition), Keyspace.basketIndex(partition)]
        arguments = [.string(basketId), .int(stock), .int(holdSeconds), .int(maxPerConsumer)]
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "basket_create")
        switch answer {
        case "ok":
            guard let state = BasketState(values: rest[...]) else { throw StoreReplyError("basket_create", reply) }
            return .created(state)
        case "basket_exists": return .exists
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
    public static let keyNames = ["basket", "stream"]
    public static let argumentNames = ["basketId", "delta", "maxCapacity"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(basketId: String, delta: Int, maxCapacity: Int) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [Keyspace.basket(basketId, partition: partition), Keyspace.stream(partition)]
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
