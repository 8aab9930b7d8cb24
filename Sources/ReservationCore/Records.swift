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

/// How a field of a stored record merges when two accounts of the record meet. Each rule is
/// order-proof (the same result whichever account comes first), which is what lets the
/// reconciler apply redelivered or reordered events and a repair take the union of two sides.
public enum FieldMergeRule: Sendable, Equatable {
    /// Set when the record is made and never changed: the first known value stands (an account
    /// that lacks it, an empty text, learns it from the other).
    case immutable
    /// A reservation status: the further one (`ReservationStatus.rank`) wins.
    case furthestStatus
    /// Unknown at first, kept once known (a payment id): the first non-empty value stands.
    case firstKnown
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
            case .furthestStatus: return furthest.value(of: field)
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

/// The fields of a basket hash (`Keyspace.basket`) that the API and the audit read.
public enum BasketField: String, CaseIterable, Sendable {
    case stock
    case pending
    case confirmed
    case capacity
    case hold
    case max
}

/// A basket's counters and settings as Redis holds them.
public struct BasketState: Sendable, Equatable {
    public var stock: Int
    public var pending: Int
    public var confirmed: Int
    public var capacity: Int
    public var holdSeconds: Int
    public var maxPerConsumer: Int

    public init(stock: Int, pending: Int, confirmed: Int, capacity: Int, holdSeconds: Int, maxPerConsumer: Int) {
        self.stock = stock
        self.pending = pending
        self.confirmed = confirmed
        self.capacity = capacity
        self.holdSeconds = holdSeconds
        self.maxPerConsumer = maxPerConsumer
    }

    /// Reads the state from field texts; nil when the basket does not exist (no stock field) or
    /// a counter is malformed.
    public init?(_ text: (BasketField) -> String?) {
        guard let stock = text(.stock).flatMap({ Int($0) }) else { return nil }
        func number(_ field: BasketField, _ fallback: Int) -> Int? {
            guard let value = text(field) else { return fallback }
            return Int(value)
        }
        guard let pending = number(.pending, 0), let confirmed = number(.confirmed, 0),
            let capacity = number(.capacity, stock), let hold = number(.hold, 0), let max = number(.max, 1)
        else { return nil }
        self.init(stock: stock, pending: pending, confirmed: confirmed, capacity: capacity, holdSeconds: hold, maxPerConsumer: max)
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
