public import RedisClient
public import ReservationCore

/// `lua/repair_reservations.lua`: write reservations of one basket back into Redis. The outcome
/// is how many were written.
public struct RepairReservationsCall: ScriptCall {
    public static let script = ReservationScripts.repairReservations
    public static let keyNames = ["holds"]
    public static let repeatedKeyNames = ["reservation"]
    public static let argumentNames = ["retentionSeconds"]
    /// The id, then every field of `ReservationField`, in its order.
    public static let repeatedArgumentNames = ["id"] + ReservationField.allCases.map(\.rawValue)

    public let keys: [String]
    public let arguments: [RedisArgument]

    /// `reservations` pairs each id with its record; all belong to one basket of `partition`.
    public init(_ reservations: [(id: String, record: ReservationRecord)], partition: Int) {
        var keys = [Keyspace.holds(partition)]
        var arguments: [RedisArgument] = [.int(Retention.finishedReservationSeconds)]
        for (id, record) in reservations {
            keys.append(Keyspace.reservation(id, partition: partition))
            arguments.append(.string(id))
            for field in ReservationField.allCases { arguments.append(.string(record.value(of: field))) }
        }
        self.keys = keys
        self.arguments = arguments
    }

    public static func decode(_ reply: RedisValue) throws -> Int {
        let (answer, rest) = try reply.answer(of: "repair_reservations")
        guard answer == "ok", let count = rest.first?.int else { throw StoreReplyError("repair_reservations", reply) }
        return count
    }
}

/// `lua/repair_basket.lua`: write a basket's counters and consumer units, and put it back in service.
public struct RepairBasketCall: ScriptCall {
    public static let script = ReservationScripts.repairBasket
    public static let keyNames = ["basket", "stream", "basketIndex", "consumerUnits"]
    public static let argumentNames = [
        "basketId", "stock", "pending", "confirmed", "capacity", "holdSeconds", "maxPerConsumer", "seq", "reason",
    ]
    public static let repeatedArgumentNames = ["consumerId", "units"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    /// `unitsByConsumer`: what each consumer holds (pending and confirmed) on the basket.
    public init(basketId: String, state: BasketState, seq: Int, reason: String, unitsByConsumer: [String: Int]) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [
            Keyspace.basket(basketId, partition: partition), Keyspace.stream(partition), Keyspace.basketIndex(partition),
            Keyspace.consumerUnits(basketId: basketId, partition: partition),
        ]
        var arguments: [RedisArgument] = [
            .string(basketId), .int(state.stock), .int(state.pending), .int(state.confirmed), .int(state.capacity),
            .int(state.holdSeconds), .int(state.maxPerConsumer), .int(seq), .string(reason),
        ]
        for (consumer, units) in unitsByConsumer.sorted(by: { $0.key < $1.key }) where units > 0 {
            arguments += [.string(consumer), .int(units)]
        }
        self.arguments = arguments
    }

    public static func decode(_ reply: RedisValue) throws {
        let (answer, _) = try reply.answer(of: "repair_basket")
        guard answer == "ok" else { throw StoreReplyError("repair_basket", reply) }
    }
}

/// A basket's maintenance flag: set takes it out of service, clear puts it back.
public struct MaintenanceCall: CommandCall {
    public let keys: [String]
    public let command: [RedisArgument]

    public init(basketId: String, inService: Bool) {
        keys = [Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId))]
        command = inService ? ["HDEL", .string(keys[0]), "maint"] : ["HSET", .string(keys[0]), "maint", "1"]
    }

    public static func decode(_ reply: RedisValue) throws {}
}
