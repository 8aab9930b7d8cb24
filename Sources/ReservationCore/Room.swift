/// The fields of a waiting room's hash (`Keyspace.room`), in the order of `lua/prelude.lua`'s
/// `ROOM` (ScriptContractTests keeps the two equal). The room lives in Redis only: the reconciler
/// keeps the basket's `waitingRoom` settings, not its queue.
public enum RoomField: String, CaseIterable, Sendable {
    /// The room's name (random, made when the room is first used): tickets and admissions carry
    /// it, so those of a room that was removed, or lost with Redis's data, are refused.
    case epoch
    /// The last place number handed out.
    case joined
    /// The pre-queue's size, fixed at the draw ("" before it).
    case pre
    /// The draw's key (64 hex digits, made at the draw): published in the basket view after it.
    case seed
    /// When the draw was made (Redis ms).
    case drawn
    /// Places admitted when the schedule last restarted, and when the last of them was admitted.
    case base
    case since
    case rate
    case at
    /// Every place up to this one has had its admission expire (kept across restarts).
    case gone
}

/// A waiting room as one script call read it: the room's stored fields, its basket's state and
/// Redis's clock. Values, checked: a field that does not read makes the whole record nil.
public struct RoomRecord: Sendable, Equatable {
    public var epoch: String
    public var joined: Int64
    /// nil before the draw.
    public var preQueue: Int64?
    public var seed: String?
    public var drawnAtMilliseconds: Int64?
    public var schedule: RoomSchedule

    public init(epoch: String, joined: Int64, preQueue: Int64?, seed: String?, drawnAtMilliseconds: Int64?, schedule: RoomSchedule) {
        self.epoch = epoch
        self.joined = joined
        self.preQueue = preQueue
        self.seed = seed
        self.drawnAtMilliseconds = drawnAtMilliseconds
        self.schedule = schedule
    }

    /// The biggest count a room holds: far beyond any crowd, far below any overflow in the
    /// schedule's arithmetic (places × 60,000 stays below 2^53).
    public static let maxPlaces: Int64 = 1_000_000_000_000

    /// Reads the stored texts (nil for a missing field); nil when the room is malformed.
    public init?(_ text: (RoomField) -> String?) {
        func number(_ field: RoomField, max: Int64 = RoomRecord.maxPlaces) -> Int64?? {
            guard let value = text(field), !value.isEmpty else { return .some(nil) }
            guard let number = Digits.decimal(value), number <= max else { return nil }
            return .some(number)
        }
        let latest = BasketSettings.latestMilliseconds
        guard let epoch = text(.epoch), RoomRecord.isHex(epoch, count: 32),
            let joined = number(.joined), let joinedCount = joined,
            let pre = number(.pre), let drawn = number(.drawn, max: latest),
            let base = number(.base), let baseCount = base,
            let since = number(.since, max: latest),
            let rate = number(.rate), let perMinute = rate, perMinute >= 1, perMinute <= Int64(WaitingRoomSettings.admitPerMinuteRange.upperBound),
            let at = number(.at, max: latest), let admittedAt = at,
            let gone = number(.gone), let goneCount = gone
        else { return nil }
        let seed = text(.seed).flatMap { $0.isEmpty ? nil : $0 }
        if let seed, !RoomRecord.isHex(seed, count: 64) { return nil }
        if pre != nil && seed == nil { return nil }
        self.init(
            epoch: epoch, joined: joinedCount, preQueue: pre, seed: seed, drawnAtMilliseconds: drawn,
            schedule: RoomSchedule(base: baseCount, baseAdmittedAt: admittedAt, since: since, perMinute: perMinute, expiredThrough: goneCount))
    }

    /// Lower-case hex of exactly `count` digits.
    public static func isHex(_ text: String, count: Int) -> Bool {
        text.utf8.count == count && text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}

/// When each place of a waiting room is admitted, and until when: `base` places were admitted by
/// `baseAdmittedAt`, then `perMinute` a minute from `since` (nil while stopped: paused). The same
/// arithmetic as `lua/prelude.lua`'s `roomAdmitted` and `basket_update.lua`'s restart; the unit
/// tests hold the two to each other through the scripts.
public struct RoomSchedule: Sendable, Equatable {
    public var base: Int64
    public var baseAdmittedAt: Int64
    public var since: Int64?
    public var perMinute: Int64
    public var expiredThrough: Int64

    public init(base: Int64, baseAdmittedAt: Int64, since: Int64?, perMinute: Int64, expiredThrough: Int64) {
        self.base = base
        self.baseAdmittedAt = baseAdmittedAt
        self.since = since
        self.perMinute = perMinute
        self.expiredThrough = expiredThrough
    }

    /// Places admitted by `now` (ms): whole minutes and the rest apart, as the script computes it.
    public func admitted(at now: Int64) -> Int64 {
        guard let since, now > since else { return base }
        let elapsed = now - since
        return base + (elapsed / 60_000) * perMinute + ((elapsed % 60_000) * perMinute) / 60_000
    }

    /// When `place` is (or will be) admitted; nil while the schedule is stopped and it is not yet.
    public func admittedAt(place: Int64) -> Int64? {
        if place <= base { return baseAdmittedAt }
        guard let since else { return nil }
        // ceil((place - base) * 60000 / perMinute), exact in integers
        let (quotient, remainder) = ((place - base) * 60_000).quotientAndRemainder(dividingBy: perMinute)
        return since + quotient + (remainder > 0 ? 1 : 0)
    }
}

/// A waiting room and its basket as one call of `lua/queue.lua` read them, with Redis's clock.
public struct RoomSnapshot: Sendable, Equatable {
    public var basket: BasketState
    public var room: RoomRecord
    /// Consumers holding a place.
    public var members: Int64
    public var observedAtMilliseconds: Int64

    public init(basket: BasketState, room: RoomRecord, members: Int64, observedAtMilliseconds: Int64) {
        self.basket = basket
        self.room = room
        self.members = members
        self.observedAtMilliseconds = observedAtMilliseconds
    }

    /// The basket's room settings (a snapshot is read only of a basket that has a room).
    public var settings: WaitingRoomSettings? { basket.settings.waitingRoom }

    /// No unit left and none held that could come back: nobody waiting can get one.
    public var soldOut: Bool { basket.stock <= 0 && basket.pending <= 0 }

    /// Places admitted by `now`, never more than were handed out.
    public func admitted(at now: Int64) -> Int64 { min(room.schedule.admitted(at: now), room.joined) }
}
