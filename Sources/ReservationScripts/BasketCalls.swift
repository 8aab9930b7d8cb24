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
    public static let argumentNames = ["basketId", "stock"] + BasketSettingField.allCases.map(\.rawValue)

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(basketId: String, stock: Int, settings: BasketSettings) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [
            Keyspace.basket(basketId, partition: partition), Keyspace.stream(partition), Keyspace.basketIndex(partition),
            Keyspace.lostBaskets(partition),
        ]
        arguments = [.string(basketId), .int(stock)] + settings.arguments
    }

    public init(basketId: String, stock: Int, holdSeconds: Int, maxPerConsumer: Int) {
        self.init(basketId: basketId, stock: stock, settings: BasketSettings(holdSeconds: holdSeconds, maxPerConsumer: maxPerConsumer))
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "basket_create")
        switch answer {
        case "ok": return .created(try BasketState(view: rest, of: "basket_create", reply))
        case "basket_exists": return .exists
        case "unavailable": return .unavailable
        default: throw StoreReplyError("basket_create", reply)
        }
    }
}

/// `lua/basket_update.lua`: change some of a basket's settings (PATCH).
public struct UpdateBasketCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        case updated(BasketState)
        case basketNotFound
        /// The window would close before it opens; nothing changed.
        case invalidWindow
        case unavailable
    }

    /// What a PATCH changes: nil leaves a setting as it is; a window time of `.some(nil)` removes it.
    public struct Change: Sendable, Equatable {
        public var holdSeconds: Int?
        public var maxPerConsumer: Int?
        public var opensAtMilliseconds: Int64??
        public var closesAtMilliseconds: Int64??
        public var paused: Bool?
        /// `.some(nil)` removes the waiting room (and its queue).
        public var waitingRoom: WaitingRoomSettings??

        public init(
            holdSeconds: Int? = nil, maxPerConsumer: Int? = nil, opensAtMilliseconds: Int64?? = nil, closesAtMilliseconds: Int64?? = nil,
            paused: Bool? = nil, waitingRoom: WaitingRoomSettings?? = nil
        ) {
            self.holdSeconds = holdSeconds
            self.maxPerConsumer = maxPerConsumer
            self.opensAtMilliseconds = opensAtMilliseconds
            self.closesAtMilliseconds = closesAtMilliseconds
            self.paused = paused
            self.waitingRoom = waitingRoom
        }

        /// The new stored text of one setting, nil where it does not change.
        func text(_ field: BasketSettingField) -> String? {
            switch field {
            case .hold: return holdSeconds.map { String($0) }
            case .max: return maxPerConsumer.map { String($0) }
            case .opens: return opensAtMilliseconds.map { $0.map { String($0) } ?? "" }
            case .closes: return closesAtMilliseconds.map { $0.map { String($0) } ?? "" }
            case .paused: return paused.map { $0 ? "1" : "0" }
            case .roomRate: return waitingRoom.map { $0.map { String($0.admitPerMinute) } ?? "" }
            case .roomSeconds: return waitingRoom.map { $0.map { String($0.admissionSeconds) } ?? "" }
            }
        }
    }

    public static let script = ReservationScripts.basketUpdate
    /// A changed basket waits for the replicas (a pause must hold after a failover); refusals do not.
    public static let replication = RedisReplication.when { RedisValue.isAnswer($0, oneOf: "ok") }
    public static let keyNames = ["basket", "stream", "lostBaskets", "room", "queue"]
    public static let argumentNames = ["basketId", "change"] + BasketSettingField.allCases.map(\.rawValue)

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(basketId: String, change: Change) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [
            Keyspace.basket(basketId, partition: partition), Keyspace.stream(partition), Keyspace.lostBaskets(partition),
            Keyspace.room(basketId: basketId, partition: partition), Keyspace.queue(basketId: basketId, partition: partition),
        ]
        let texts = BasketSettingField.allCases.map(change.text)
        arguments = [.string(basketId), .string(String(texts.map { $0 == nil ? "0" : "1" }))] + texts.map { .string($0 ?? "") }
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "basket_update")
        switch answer {
        case "ok": return .updated(try BasketState(view: rest, of: "basket_update", reply))
        case "basket_not_found": return .basketNotFound
        case "invalid_window": return .invalidWindow
        case "unavailable": return .unavailable
        default: throw StoreReplyError("basket_update", reply)
        }
    }
}

extension BasketSettings {
    /// One argument per `BasketSettingField`, in order (the scripts' `SETTINGS`).
    var arguments: [RedisArgument] { BasketSettingField.allCases.map { .string(value(of: $0)) } }
}

extension BasketState {
    /// A basket's view as the scripts answer it: its `BASKET` fields, then Redis's clock.
    init(view values: [RedisValue], of call: String, _ reply: RedisValue) throws {
        guard values.count == BasketField.allCases.count + 1, var state = BasketState(values: values[...]),
            let now = values.last?.int
        else { throw StoreReplyError(call, reply) }
        state.observedAtMilliseconds = Int64(now)
        self = state
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
        case "ok": return .adjusted(try BasketState(view: rest, of: "basket_adjust", reply))
        case "basket_not_found": return .basketNotFound
        case "insufficient_stock": return .insufficientStock
        case "capacity_exceeded": return .capacityExceeded
        case "unavailable": return .unavailable
        default: throw StoreReplyError("basket_adjust", reply)
        }
    }
}

/// A basket's state, read with one HMGET (nil: no such basket). The reconciler's reads.
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

/// `lua/basket_read.lua`: a basket's view with Redis's clock, which tells its sale's state as the
/// reserve script would (nil: no such basket). The API's reads.
public struct BasketViewCall: ScriptCall {
    public static let script = ReservationScripts.basketRead
    /// A read: never held.
    public static let replication = RedisReplication.none
    public static let keyNames = ["basket"]
    public static let argumentNames: [String] = []

    public let keys: [String]
    public let arguments: [RedisArgument] = []

    public init(basketId: String) {
        keys = [Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId))]
    }

    public static func decode(_ reply: RedisValue) throws -> BasketState? {
        let (answer, rest) = try reply.answer(of: "basket_read")
        switch answer {
        case "ok": return try BasketState(view: rest, of: "basket_read", reply)
        case "basket_not_found": return nil
        default: throw StoreReplyError("basket_read", reply)
        }
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
