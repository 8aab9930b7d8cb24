public import RedisClient
public import ReservationCore

/// `lua/queue.lua`: join a basket's waiting room, or read the room (a poll cache's refresh).
public struct QueueCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        /// The room (and basket) as the call left it; `place` is the consumer's join number when
        /// joining (nil for a read).
        case room(RoomSnapshot, join: Int64?)
        case basketNotFound
        case noWaitingRoom
        case saleClosed
        case unavailable
    }

    public static let script = ReservationScripts.queue
    /// A call that wrote (a join, the room's opening, the draw) waits for the replicas: a draw
    /// lost in a failover would be drawn again, differently. A plain read is never held.
    public static let replication = RedisReplication.when { reply in
        guard let values = reply.array, values.count > 2, values[0].string == "ok" else { return false }
        return values[2].int == 1
    }
    public static let keyNames = ["basket", "room", "queue", "lostBaskets"]
    public static let argumentNames = ["basketId", "consumerId", "seed", "epoch", "replace"]

    public let keys: [String]
    public let arguments: [RedisArgument]

    /// `consumerId` nil reads the room. `seed` (64 hex digits) and `epoch` (32) are fresh random
    /// values, kept only if this call makes the draw or opens the room. `replacing`: the join
    /// number of the consumer's expired admission, to be put at the back.
    public init(basketId: String, consumerId: String?, seed: String, epoch: String, replacing: Int64? = nil) {
        let partition = Keyspace.partition(ofBasket: basketId)
        keys = [
            Keyspace.basket(basketId, partition: partition), Keyspace.room(basketId: basketId, partition: partition),
            Keyspace.queue(basketId: basketId, partition: partition), Keyspace.lostBaskets(partition),
        ]
        arguments = [
            .string(basketId), .string(consumerId ?? ""), .string(seed), .string(epoch), .string(replacing.map { String($0) } ?? ""),
        ]
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "queue")
        switch answer {
        case "ok":
            let basketCount = BasketField.allCases.count
            let roomCount = RoomField.allCases.count
            guard rest.count == 3 + basketCount + roomCount + 1, let members = rest[2].int, members >= 0,
                let now = rest.last?.int, (0...BasketSettings.latestMilliseconds).contains(Int64(now)),
                var basket = BasketState(values: rest[3..<(3 + basketCount)]), basket.settings.waitingRoom != nil
            else { throw StoreReplyError("queue", reply) }
            basket.observedAtMilliseconds = Int64(now)
            let roomValues = rest[(3 + basketCount)..<(3 + basketCount + roomCount)]
            let texts = Dictionary(uniqueKeysWithValues: zip(RoomField.allCases, roomValues.map(\.string)))
            guard let room = RoomRecord({ texts[$0] ?? nil }) else { throw StoreReplyError("queue", reply) }
            var join: Int64?
            if let text = rest[0].string, !text.isEmpty {
                guard let number = Int64(text), number >= 1, number <= room.joined else { throw StoreReplyError("queue", reply) }
                join = number
            }
            return .room(RoomSnapshot(basket: basket, room: room, members: Int64(members), observedAtMilliseconds: Int64(now)), join: join)
        case "basket_not_found": return .basketNotFound
        case "no_waiting_room": return .noWaitingRoom
        case "sale_closed": return .saleClosed
        case "unavailable": return .unavailable
        default: throw StoreReplyError("queue", reply)
        }
    }
}
