public import RedisClient
public import ReservationCore

/// What `lua/release.lua` needs to know of one reservation to name every key it touches. A
/// reservation's basket and consumer never change, so reading them before the script is safe;
/// the script checks they still match.
public struct ReleaseTarget: Sendable, Equatable {
    public var reservationId: String
    public var basketId: String
    public var consumerId: String

    public init(reservationId: String, basketId: String, consumerId: String) {
        self.reservationId = reservationId
        self.basketId = basketId
        self.consumerId = consumerId
    }

    fileprivate func keys(partition: Int) -> [String] {
        [
            Keyspace.reservation(reservationId, partition: partition), Keyspace.basket(basketId, partition: partition),
            Keyspace.consumerUnits(basketId: basketId, partition: partition),
        ]
    }

    fileprivate var arguments: [RedisArgument] { [.string(reservationId), .string(basketId), .string(consumerId)] }
}

/// `lua/release.lua` in "cancel" mode: cancel one reservation.
public struct CancelReservationCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        case cancelled(ReservationRecord)
        case reservationNotFound
        case reservationExpired
        case unavailable
        /// The reservation is not the one read before the call (it vanished and came back).
        case staleKeys
    }

    public static let script = ReservationScripts.release
    public static let keyNames = ["holds", "stream"]
    /// A cancel, the first or a repeated one, waits for the replicas; refusals do not.
    public static let replication = RedisReplication.when { RedisValue.isAnswer($0, oneOf: "cancelled") }
    public static let repeatedKeyNames = ["reservation", "basket", "consumerUnits"]
    public static let argumentNames = ["mode", "retentionSeconds"]
    public static let repeatedArgumentNames = ["reservationId", "basketId", "consumerId"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(_ target: ReleaseTarget, partition: Int) {
        keys = [Keyspace.holds(partition), Keyspace.stream(partition)] + target.keys(partition: partition)
        arguments = ["cancel", .int(Retention.finishedReservationSeconds)] + target.arguments
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "release cancel")
        switch answer {
        case "cancelled":
            guard let record = ReservationRecord(values: rest[...]) else { throw StoreReplyError("release cancel", reply) }
            return .cancelled(record)
        case "reservation_not_found": return .reservationNotFound
        case "reservation_expired": return .reservationExpired
        case "unavailable": return .unavailable
        case "stale_keys": return .staleKeys
        default: throw StoreReplyError("release cancel", reply)
        }
    }
}

/// `lua/release.lua` in "expire" mode: expire those of the given holds that are due. The
/// outcome is how many expired.
public struct ExpireHoldsCall: ScriptCall {
    public static let script = ReservationScripts.release
    public static let keyNames = CancelReservationCall.keyNames
    public static let repeatedKeyNames = CancelReservationCall.repeatedKeyNames
    public static let argumentNames = CancelReservationCall.argumentNames
    public static let repeatedArgumentNames = CancelReservationCall.repeatedArgumentNames

    public let keys: [String]
    public let arguments: [RedisArgument]

    public init(_ targets: [ReleaseTarget], partition: Int) {
        var keys = [Keyspace.holds(partition), Keyspace.stream(partition)]
        var arguments: [RedisArgument] = ["expire", .int(Retention.finishedReservationSeconds)]
        keys.reserveCapacity(2 + 3 * targets.count)
        arguments.reserveCapacity(2 + 3 * targets.count)
        for target in targets {
            keys += target.keys(partition: partition)
            arguments += target.arguments
        }
        self.keys = keys
        self.arguments = arguments
    }

    /// How many holds it expired, and how many of those listed it left in place (skipped over
    /// by the next page of due holds).
    public static func decode(_ reply: RedisValue) throws -> (expired: Int, kept: Int) {
        let (answer, rest) = try reply.answer(of: "release expire")
        guard answer == "expired", rest.count == 2, let count = rest[0].int, let kept = rest[1].int, count >= 0, kept >= 0 else {
            throw StoreReplyError("release expire", reply)
        }
        return (count, kept)
    }
}

/// The ids of a partition's holds due by `nowMilliseconds`, oldest first, at most `limit`.
public struct DueHoldsCall: ScriptCall {
    public static let script = ReservationScripts.dueHolds
    /// Reads only.
    public static let replication = RedisReplication.none
    public static let keyNames = ["holds"]
    public static let argumentNames = ["limit"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    /// Due by Redis's clock.
    public init(partition: Int, limit: Int) {
        keys = [Keyspace.holds(partition)]
        arguments = [.int(limit)]
    }

    public static func decode(_ reply: RedisValue) throws -> [String] {
        guard let values = reply.array else { throw StoreReplyError("due holds", reply) }
        return values.compactMap(\.string)
    }
}

/// One reservation, read with one HMGET (nil: no such reservation).
public struct ReadReservationCall: CommandCall {
    public let keys: [String]
    public var command: [RedisArgument] {
        ["HMGET", .string(keys[0])] + ReservationField.allCases.map { .string($0.rawValue) }
    }

    public init(reservationId: String, partition: Int) {
        keys = [Keyspace.reservation(reservationId, partition: partition)]
    }

    public static func decode(_ reply: RedisValue) throws -> ReservationRecord? {
        guard let values = reply.array, values.count == ReservationField.allCases.count else {
            throw StoreReplyError("read reservation", reply)
        }
        if values[0].isNull { return nil }
        guard let record = ReservationRecord(values: values[...]) else { throw StoreReplyError("read reservation", reply) }
        return record
    }
}
