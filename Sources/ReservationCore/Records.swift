/// The fields of a reservation as Redis stores them (hash fields of `Keyspace.reservation`) and as
/// the events that change it carry them. One list, in the order `lua/prelude.lua`'s `RESERVATION`
/// lists them (ScriptContractTests keeps the two equal): the scripts read, write, reply and append
/// events through that list, the reconciler merges and stores by each field's `merge` rule.
/// Adding a field is one new case here; the compiler then points at `ReservationRecord`, its rule
/// and the reconciler's column map, and the schema tests at every script that must write it.
public enum ReservationField: String, CaseIterable, Sendable {
    case basket
    case consumer
    case qty
    case status
    case exp
    case pay

    /// How two accounts of one reservation (two events of a batch, Redis and Postgres in a
    /// repair, a stored row and an incoming one) agree on this field.
    public var merge: FieldMergeRule {
        switch self {
        case .basket, .consumer, .qty, .exp: return .immutable
        case .status: return .furthestStatus
        case .pay: return .firstKnown
        }
    }

    /// Known when the reservation is made: `reserve.lua` writes it and its `reserved` event
    /// carries it (checked by the schema tests). The others are learned later (a payment id).
    public var setWhenReserved: Bool {
        switch self {
        case .basket, .consumer, .qty, .status, .exp: return true
        case .pay: return false
        }
    }
}

/// How a field of a stored record merges when two accounts of the record meet. For accounts that
/// agree on what is fixed, each rule gives the same result whichever comes first, which is what
/// lets the reconciler apply redelivered or reordered events and a repair take the union of two
/// sides. Where two accounts disagree on an immutable field (only corrupt data does), the first
/// account stands (Postgres's, in a repair, which reports the disagreement).
public enum FieldMergeRule: Sendable, Equatable {
    /// Set when the record is made and never changed: the first known value stands (an account
    /// that lacks it, an empty text, learns it from the other).
    case immutable
    /// A reservation status: the further one (`ReservationStatus.rank`) wins.
    case furthestStatus
    /// Unknown at first, kept once known (a payment id): the first non-empty value stands.
    case firstKnown
    /// Changed by events numbered by the basket's `seq`: the newest account wins.
    case latestBySequence
}

/// A reservation's life: pending until paid (confirmed), cancelled or expired. A status only
/// moves forward, which is what makes applying events in any order safe.
public enum ReservationStatus: String, Sendable, CaseIterable {
    case pending
    case confirmed
    case cancelled
    case expired

    /// pending < confirmed < cancelled | expired.
    public var rank: Int {
        switch self {
        case .pending: return 0
        case .confirmed: return 1
        case .cancelled, .expired: return 2
        }
    }

    /// Holds units of its basket (pending or confirmed).
    public var isActive: Bool { rank < 2 }
}

/// One reservation, as Redis and the events know it (its id is the key).
public struct ReservationRecord: Sendable, Equatable {
    public var basketId: String
    public var consumerId: String
    public var quantity: Int
    public var status: ReservationStatus
    public var expiresAtMilliseconds: Int64
    public var paymentId: String?

    public init(
        basketId: String, consumerId: String, quantity: Int, status: ReservationStatus,
        expiresAtMilliseconds: Int64, paymentId: String?
    ) {
        self.basketId = basketId
        self.consumerId = consumerId
        self.quantity = quantity
        self.status = status
        self.expiresAtMilliseconds = expiresAtMilliseconds
        self.paymentId = paymentId
    }

    /// The stored text of one field ("" for no payment).
    public func value(of field: ReservationField) -> String {
        switch field {
        case .basket: return basketId
        case .consumer: return consumerId
        case .qty: return String(quantity)
        case .status: return status.rawValue
        case .exp: return String(expiresAtMilliseconds)
        case .pay: return paymentId ?? ""
        }
    }

    /// Two accounts of one reservation merged field by field, each by its `merge` rule
    /// (`self` is the account known first: it wins where the rule says "first").
    public func merged(with other: ReservationRecord) -> ReservationRecord {
        let furthest = other.status.rank > status.rank ? other : self
        let merged = ReservationRecord { field in
            let (mine, theirs) = (value(of: field), other.value(of: field))
            switch field.merge {
            case .immutable, .firstKnown: return mine.isEmpty ? theirs : mine
            // (a reservation's later account is the one further on)
            case .furthestStatus, .latestBySequence: return furthest.value(of: field)
            }
        }
        // Both accounts are valid records, so every field merged is one of theirs.
        return merged ?? self
    }

    /// Reads a record from stored field texts; nil when a field is missing or malformed (data
    /// from Redis or a stream is checked like any other input). `pay` may be absent or "".
    public init?(_ text: (ReservationField) -> String?) {
        guard let basketId = text(.basket), let consumerId = text(.consumer),
            let quantity = text(.qty).flatMap({ Int($0) }), quantity > 0,
            let status = text(.status).flatMap(ReservationStatus.init(rawValue:)),
            let expires = text(.exp).flatMap({ Int64($0) })
        else { return nil }
        let payment = text(.pay)
        self.init(
            basketId: basketId, consumerId: consumerId, quantity: quantity, status: status,
            expiresAtMilliseconds: expires, paymentId: (payment?.isEmpty ?? true) ? nil : payment)
    }
}

/// The fields of a basket hash (`Keyspace.basket`) that the API and the audit read, in the order
/// of `lua/prelude.lua`'s `BASKET`: the counters, then the sale settings (`BasketSettingField`).
public enum BasketField: String, CaseIterable, Sendable {
    case stock
    case pending
    case confirmed
    case capacity
    case hold
    case max
    case opens
    case closes
    case paused
    case roomRate = "room_rate"
    case roomSeconds = "room_secs"
}

/// A basket's sale settings: set when it is created (PUT) and changed by PATCH, stored in its hash,
/// carried whole by the events that set them (`basket_created`, `basket_updated`,
/// `basket_repaired`, with the `seq` that orders them), kept in Postgres and restored by a repair.
/// In the order of `lua/prelude.lua`'s `SETTINGS` (ScriptContractTests keeps them equal).
public enum BasketSettingField: String, CaseIterable, Sendable {
    case hold
    case max
    case opens
    case closes
    case paused
    /// The waiting room's `admitPerMinute` ("" when the basket has none).
    case roomRate = "room_rate"
    /// The waiting room's `admissionSeconds` ("" when the basket has none).
    case roomSeconds = "room_secs"

    /// How two accounts of a basket's settings agree: the newer (by the basket's `seq`) wins whole.
    public var merge: FieldMergeRule { .latestBySequence }
}

/// A basket's sale window and limits.
public struct BasketSettings: Sendable, Equatable {
    public var holdSeconds: Int
    public var maxPerConsumer: Int
    /// Redis time (ms) the sale opens at; nil: open from its creation.
    public var opensAtMilliseconds: Int64?
    /// Redis time (ms) the sale closes at; nil: it does not close.
    public var closesAtMilliseconds: Int64?
    /// Paused by an operator: no reservation until unpaused.
    public var paused: Bool
    /// The waiting room in front of the sale; nil: none (anyone may reserve).
    public var waitingRoom: WaitingRoomSettings?

    public init(
        holdSeconds: Int, maxPerConsumer: Int, opensAtMilliseconds: Int64? = nil, closesAtMilliseconds: Int64? = nil,
        paused: Bool = false, waitingRoom: WaitingRoomSettings? = nil
    ) {
        self.holdSeconds = holdSeconds
        self.maxPerConsumer = maxPerConsumer
        self.opensAtMilliseconds = opensAtMilliseconds
        self.closesAtMilliseconds = closesAtMilliseconds
        self.paused = paused
        self.waitingRoom = waitingRoom
    }

    /// The latest a sale may open or close: year 9999, far from any overflow in ms arithmetic.
    public static let latestMilliseconds: Int64 = 253_402_300_799_000

    /// The stored text of one field ("" for none; `paused` is "1" or "0").
    public func value(of field: BasketSettingField) -> String {
        switch field {
        case .hold: return String(holdSeconds)
        case .max: return String(maxPerConsumer)
        case .opens: return opensAtMilliseconds.map { String($0) } ?? ""
        case .closes: return closesAtMilliseconds.map { String($0) } ?? ""
        case .paused: return paused ? "1" : "0"
        case .roomRate: return waitingRoom.map { String($0.admitPerMinute) } ?? ""
        case .roomSeconds: return waitingRoom.map { String($0.admissionSeconds) } ?? ""
        }
    }

    /// Reads settings from stored texts; a missing limit takes its old default (hashes written
    /// before these fields existed), a malformed one is nil.
    public init?(_ text: (BasketSettingField) -> String?) {
        func time(_ field: BasketSettingField) -> Int64?? {
            guard let value = text(field), !value.isEmpty else { return .some(nil) }
            guard let number = Int64(value), (0...Self.latestMilliseconds).contains(number) else { return nil }
            return .some(number)
        }
        guard let hold = Int(text(.hold) ?? "0"), hold >= 0, let max = Int(text(.max) ?? "1"), max >= 1,
            let opens = time(.opens), let closes = time(.closes)
        else { return nil }
        let paused = text(.paused) ?? "0"
        guard paused == "0" || paused == "1" || paused.isEmpty else { return nil }
        // Both room fields, or neither: a room half stored is malformed.
        let rate = text(.roomRate) ?? ""
        let seconds = text(.roomSeconds) ?? ""
        var room: WaitingRoomSettings?
        if !rate.isEmpty || !seconds.isEmpty {
            guard let perMinute = Int(rate), let admission = Int(seconds),
                let settings = WaitingRoomSettings(admitPerMinute: perMinute, admissionSeconds: admission)
            else { return nil }
            room = settings
        }
        self.init(
            holdSeconds: hold, maxPerConsumer: max, opensAtMilliseconds: opens, closesAtMilliseconds: closes, paused: paused == "1",
            waitingRoom: room)
    }

    /// Where the sale stands at `now` (Redis ms), decided as `reserve.lua` decides it: closed once
    /// `closesAt` is reached, scheduled before `opensAt`, then paused, else open.
    public func state(at now: Int64) -> SaleState {
        if let closes = closesAtMilliseconds, now >= closes { return .closed }
        if let opens = opensAtMilliseconds, now < opens { return .scheduled }
        return paused ? .paused : .open
    }
}

/// A basket's waiting room (contract: `waitingRoom`): places admitted per minute from the opening,
/// and how long an admission lasts.
public struct WaitingRoomSettings: Sendable, Equatable {
    public static let admitPerMinuteRange = 1...1_000_000
    public static let admissionSecondsRange = 30...3600
    public static let defaultAdmissionSeconds = 300

    public let admitPerMinute: Int
    public let admissionSeconds: Int

    /// nil when either is out of its range.
    public init?(admitPerMinute: Int, admissionSeconds: Int = Self.defaultAdmissionSeconds) {
        guard Self.admitPerMinuteRange.contains(admitPerMinute), Self.admissionSecondsRange.contains(admissionSeconds) else { return nil }
        self.admitPerMinute = admitPerMinute
        self.admissionSeconds = admissionSeconds
    }
}

/// A basket's sale state, as its view shows it.
public enum SaleState: String, Sendable, CaseIterable {
    case scheduled
    case open
    case paused
    case closed
}

/// A basket's counters and settings as Redis holds them.
public struct BasketState: Sendable, Equatable {
    public var stock: Int
    public var pending: Int
    public var confirmed: Int
    public var capacity: Int
    public var settings: BasketSettings
    /// Redis's clock when the state was read (a script's view carries it): what the view's sale
    /// state is decided by. Not part of the stored state, so not compared.
    public var observedAtMilliseconds: Int64? = nil

    public static func == (lhs: BasketState, rhs: BasketState) -> Bool {
        (lhs.stock, lhs.pending, lhs.confirmed, lhs.capacity) == (rhs.stock, rhs.pending, rhs.confirmed, rhs.capacity)
            && lhs.settings == rhs.settings
    }

    public var holdSeconds: Int {
        get { settings.holdSeconds }
        set { settings.holdSeconds = newValue }
    }
    public var maxPerConsumer: Int {
        get { settings.maxPerConsumer }
        set { settings.maxPerConsumer = newValue }
    }

    public init(stock: Int, pending: Int, confirmed: Int, capacity: Int, settings: BasketSettings) {
        self.stock = stock
        self.pending = pending
        self.confirmed = confirmed
        self.capacity = capacity
        self.settings = settings
    }

    public init(stock: Int, pending: Int, confirmed: Int, capacity: Int, holdSeconds: Int, maxPerConsumer: Int) {
        self.init(
            stock: stock, pending: pending, confirmed: confirmed, capacity: capacity,
            settings: BasketSettings(holdSeconds: holdSeconds, maxPerConsumer: maxPerConsumer))
    }

    /// Reads the state from field texts; nil when the basket does not exist (no stock field) or
    /// a counter or setting is malformed.
    public init?(_ text: (BasketField) -> String?) {
        guard let stock = text(.stock).flatMap({ Int($0) }) else { return nil }
        func number(_ field: BasketField, _ fallback: Int) -> Int? {
            guard let value = text(field) else { return fallback }
            return Int(value)
        }
        guard let pending = number(.pending, 0), let confirmed = number(.confirmed, 0), let capacity = number(.capacity, stock),
            let settings = BasketSettings({ text(BasketField(rawValue: $0.rawValue) ?? .stock) })
        else { return nil }
        self.init(stock: stock, pending: pending, confirmed: confirmed, capacity: capacity, settings: settings)
    }
}

/// What a reservation request asks for (its basket is named by the path and by the key): the
/// fields an Idempotency-Key's record is compared on. A new request field is a new property here
/// and a new `Field` (a unit test fails until the two lists agree), so it enters the comparison
/// by default.
public struct ReservationRequest: Sendable, Equatable {
    public var consumerId: String
    public var quantity: Int

    public init(consumerId: String, quantity: Int) {
        self.consumerId = consumerId
        self.quantity = quantity
    }

    /// The request's fields, in the fingerprint's order.
    public enum Field: String, CaseIterable, Sendable {
        case consumerId
        case quantity
    }

    /// One field as it enters the fingerprint; nil when it is absent (left at its default).
    public func fingerprintText(_ field: Field) -> String? {
        switch field {
        case .consumerId: return consumerId
        case .quantity: return String(quantity)
        }
    }

    /// Stored with an Idempotency-Key's answer, so a different request under the same key is told
    /// apart (422). The first two fields keep the form records were first stored in
    /// (`consumer\nquantity`), and a later field enters only when present, as
    /// `\n<name>:<length>:<text>` (unambiguous whatever the text holds), so every record stored
    /// before a field existed still matches the same request.
    public var fingerprint: String {
        var text = consumerId + "\n" + String(quantity)
        for field in Field.allCases.dropFirst(2) {
            guard let value = fingerprintText(field) else { continue }
            text += "\n\(field.rawValue):\(value.utf8.count):\(value)"
        }
        return text
    }
}
