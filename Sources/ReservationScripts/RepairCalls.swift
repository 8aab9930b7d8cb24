public import RedisClient
public import ReservationCore

/// What a repair step that needs the basket's lease found.
public enum RepairStepOutcome: Sendable, Equatable {
    case done
    /// Another repair owns the basket now (this one's lease ran out): nothing was written.
    case leaseLost
}

/// `lua/repair_reservations.lua`: write one chunk of reservations of one basket into Redis, if
/// the repair still owns the basket.
public struct RepairReservationsCall: ScriptCall {
    public static let script = ReservationScripts.repairReservations
    public static let keyNames = ["basket", "holds"]
    public static let repeatedKeyNames = ["reservation"]
    public static let argumentNames = ["token", "leaseMilliseconds"]
    /// The id, then every field of `ReservationField`, in its order, then the TTL.
    public static let repeatedArgumentNames = ["id"] + ReservationField.allCases.map(\.rawValue) + ["ttl"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    /// `reservations` pairs each id with its record; all belong to `basketId`. A finished one
    /// keeps `ttlSeconds` (nil: the whole retention); an active one is kept for good.
    public init(_ reservations: [(id: String, record: ReservationRecord, ttlSeconds: Int?)], basketId: String, lease: RepairLease) {
        let partition = Keyspace.partition(ofBasket: basketId)
        var keys = [Keyspace.basket(basketId, partition: partition), Keyspace.holds(partition)]
        var arguments: [RedisArgument] = [.string(lease.token), .int(lease.milliseconds)]
        for (id, record, ttl) in reservations {
            keys.append(Keyspace.reservation(id, partition: partition))
            arguments.append(.string(id))
            for field in ReservationField.allCases { arguments.append(.string(record.value(of: field))) }
            arguments.append(.int(record.status.isActive ? 0 : max(ttl ?? Retention.finishedReservationSeconds, 1)))
        }
        self.keys = keys
        self.arguments = arguments
    }

    public init(_ reservations: [(id: String, record: ReservationRecord)], basketId: String, lease: RepairLease) {
        self.init(reservations.map { ($0.id, $0.record, nil) }, basketId: basketId, lease: lease)
    }

    public static func decode(_ reply: RedisValue) throws -> RepairStepOutcome {
        let (answer, rest) = try reply.answer(of: "repair_reservations")
        if answer == "lease_lost" { return .leaseLost }
        guard answer == "ok", rest.first?.int != nil else { throw StoreReplyError("repair_reservations", reply) }
        return .done
    }
}

/// `lua/repair_units.lua`: stage one chunk of a basket's consumer units, if the repair still
/// owns the basket; `RepairBasketCall` puts the staged hash in place.
public struct RepairUnitsCall: ScriptCall {
    public static let script = ReservationScripts.repairUnits
    public static let keyNames = ["basket", "staging"]
    public static let argumentNames = ["token", "leaseMilliseconds", "first"]
    public static let repeatedArgumentNames = ["consumerId", "units"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    /// The staging hash of a repair: same slot as the basket, one per repair token.
    public static func stagingKey(basketId: String, lease: RepairLease) -> String {
        Keyspace.consumerUnits(basketId: basketId, partition: Keyspace.partition(ofBasket: basketId)) + "#repair:" + lease.token
    }

    public init(basketId: String, units: [(consumer: String, units: Int)], first: Bool, lease: RepairLease) {
        keys = [Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId)), Self.stagingKey(basketId: basketId, lease: lease)]
        var arguments: [RedisArgument] = [.string(lease.token), .int(lease.milliseconds), .string(first ? "1" : "0")]
        for (consumer, units) in units where units > 0 { arguments += [.string(consumer), .int(units)] }
        self.arguments = arguments
    }

    public static func decode(_ reply: RedisValue) throws -> RepairStepOutcome {
        let (answer, rest) = try reply.answer(of: "repair_units")
        if answer == "lease_lost" { return .leaseLost }
        guard answer == "ok", rest.first?.int != nil else { throw StoreReplyError("repair_units", reply) }
        return .done
    }
}

/// `lua/repair_basket.lua`: write a basket's counters, put the staged consumer units in place,
/// take the basket off the lost set and put it back in service.
public struct RepairBasketCall: ScriptCall {
    public static let script = ReservationScripts.repairBasket
    public static let keyNames = ["basket", "stream", "basketIndex", "consumerUnits", "staging", "lostBaskets"]
    public static let argumentNames =
        ["token", "basketId", "stock", "pending", "confirmed", "capacity", "seq", "reason"] + BasketSettingField.allCases.map(\.rawValue)

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(basketId: String, state: BasketState, seq: Int, reason: String, lease: RepairLease) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [
            Keyspace.basket(basketId, partition: partition), Keyspace.stream(partition), Keyspace.basketIndex(partition),
            Keyspace.consumerUnits(basketId: basketId, partition: partition), RepairUnitsCall.stagingKey(basketId: basketId, lease: lease),
            Keyspace.lostBaskets(partition),
        ]
        arguments =
            [
                .string(lease.token), .string(basketId), .int(state.stock), .int(state.pending), .int(state.confirmed),
                .int(state.capacity), .int(seq), .string(reason),
            ] + state.settings.arguments
    }

    public static func decode(_ reply: RedisValue) throws -> RepairStepOutcome {
        let (answer, _) = try reply.answer(of: "repair_basket")
        if answer == "lease_lost" { return .leaseLost }
        guard answer == "ok" else { throw StoreReplyError("repair_basket", reply) }
        return .done
    }
}

/// A repair's claim on one basket: a random owner token and how long each renewal lasts.
public struct RepairLease: Sendable, Equatable {
    public let token: String
    public let milliseconds: Int

    public init(token: String, milliseconds: Int) {
        self.token = token
        self.milliseconds = milliseconds
    }
}

/// `lua/repair_lease.lua`: take a basket out of service for one repair (or renew the repair's
/// own lease), or put it back in service if this repair still owns it.
public struct RepairLeaseCall: ScriptCall {
    public enum Mode: String, Sendable {
        case acquire
        case release
    }

    public enum Outcome: Sendable, Equatable {
        case acquired
        /// Another repair owns the basket for `leaseLeftMilliseconds` more.
        case busy(leaseLeftMilliseconds: Int)
        case released
        /// Release by a repair that no longer owns the basket: nothing changed.
        case lost
    }

    public static let script = ReservationScripts.repairLease
    /// Not held for REDIS_WAIT_REPLICAS: a lease lost with its primary only puts the basket back
    /// in service on the promoted replica, and every later write of the repair checks the token
    /// there and stops (lease lost); held, a lease its replicas were slow to confirm would throw
    /// after taking the basket out of service for the whole lease. The repair's data writes
    /// (`repair_reservations`, `repair_units`, `repair_basket`) are held.
    public static let replication = RedisReplication.none
    public static let keyNames = ["basket"]
    public static let argumentNames = ["mode", "token", "leaseMilliseconds"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(basketId: String, mode: Mode, lease: RepairLease) {
        keys = [Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId))]
        arguments = [.string(mode.rawValue), .string(lease.token), .int(lease.milliseconds)]
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "repair_lease")
        switch answer {
        case "acquired": return .acquired
        case "busy": return .busy(leaseLeftMilliseconds: rest.first?.int ?? 0)
        case "released": return .released
        case "lost": return .lost
        default: throw StoreReplyError("repair_lease", reply)
        }
    }
}

/// What the audit needs to know beyond the counters: whether a repair holds the basket (and
/// until when, in Redis milliseconds) and how often the reserve script found its books disagree.
public struct BasketHealthCall: CommandCall {
    public struct Health: Sendable, Equatable {
        public var repairOwner: String?
        public var leaseEndMilliseconds: Int?
        public var booksMismatches: Int
        /// The basket's change counter (what its latest event carries).
        public var seq: Int?
    }

    public let keys: [String]
    public var command: [RedisArgument] { ["HMGET", .string(keys[0]), "maint", "lease", "mismatch", "seq"] }

    public init(basketId: String) {
        keys = [Keyspace.basket(basketId, partition: Keyspace.partition(ofBasket: basketId))]
    }

    public static func decode(_ reply: RedisValue) throws -> Health {
        guard let values = reply.array, values.count == 4 else { throw StoreReplyError("basket health", reply) }
        return Health(
            repairOwner: values[0].string, leaseEndMilliseconds: values[1].int, booksMismatches: mismatches(values[2]), seq: values[3].int)
    }

    /// The reserve scripts read the mark as 1 to 15 digits and serve no request of a basket whose
    /// mark is anything else (fail closed), so such a mark counts as one mismatch: the audit
    /// reports it and the repair rewrites it. Only a missing mark is none.
    public static func mismatches(_ mark: RedisValue) -> Int {
        if mark.isNull { return 0 }
        return mark.string.flatMap(Digits.decimal).map { Int($0) } ?? 1
    }
}
