/// The fields of a reservation as Redis stores them (hash fields of `Keyspace.reservation`) and as
/// the events that change it carry them. One list, so adding a field is one new case here: the
/// compiler then points at `ReservationRecord` (which must carry it), the script contracts (which
/// encode and decode it) and the reconciler's column map (which must store it).
public enum ReservationField: String, CaseIterable, Sendable {
    case basket
    case consumer
    case qty
    case status
    case exp
    case pay
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
