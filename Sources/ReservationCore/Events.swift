/// The fields of a stream event beyond a reservation's own (which an event carries under their
/// `ReservationField` names). The scripts' `XADD`s are checked against `StoreEvent.Kind`'s lists
/// (ScriptContractTests), so a field a script appends and nobody reads, or one the decoder needs
/// and a script leaves out, fails a unit test.
public enum EventField: String, CaseIterable, Sendable {
    case type
    /// The basket's id (also `ReservationField.basket` on a reservation's events).
    case basket
    /// The basket's change counter after this change (orders a basket's events).
    case seq
    /// The basket's stock and capacity after this change (absolute, so the newest wins).
    case stock
    case capacity
    case hold
    case max
    case delta
    /// What drift a repair mended.
    case reason
    /// Redis time of the change, in milliseconds.
    case at
    /// The reservation's id.
    case res
    /// The status a reservation left.
    case from
    /// A payment webhook's event id, type, payment id, amount, currency and outcome.
    case event
    case kind
    case payment
    case amount
    case currency
    case outcome
}

/// One stream entry, decoded in one place: what it changes of a basket, of a reservation and of
/// the payments. Decoding checks every value like any other input: a part that is missing or
/// malformed is nil (the rest of the event still counts), never a guess.
public struct StoreEvent: Sendable, Equatable {
    /// The event types the scripts append, with the fields each carries.
    public enum Kind: String, CaseIterable, Sendable {
        case reserved
        case cancelled
        case expired
        case payment
        case basketCreated = "basket_created"
        case stockAdjusted = "stock_adjusted"
        case basketRepaired = "basket_repaired"

        /// Fields an event of this kind always carries.
        public var requiredFields: Set<String> {
            let basketChange: Set<String> = ["type", "basket", "seq", "stock", "capacity", "at"]
            let madeWith = Set(ReservationField.allCases.filter(\.setWhenReserved).map(\.rawValue))
            switch self {
            // "reserved" leaves its status implied (pending), to keep the hot script small.
            case .reserved: return basketChange.union(["res"]).union(madeWith.subtracting(["status"])).subtracting(["at"])
            case .cancelled, .expired: return basketChange.union(["res", "from"]).union(madeWith)
            case .payment: return ["type", "event", "kind", "res", "payment", "amount", "currency", "outcome", "at"]
            case .basketCreated: return basketChange.union(["hold", "max"])
            case .stockAdjusted: return basketChange.union(["delta"])
            case .basketRepaired: return basketChange.union(["hold", "max", "reason"])
            }
        }

        /// Fields an event of this kind may carry besides the required ones.
        public var optionalFields: Set<String> {
            let record = Set(ReservationField.allCases.map(\.rawValue))
            switch self {
            case .reserved, .cancelled, .expired: return record.subtracting(requiredFields)
            // A payment that confirmed its reservation carries the basket's change and the record.
            case .payment: return record.union(["seq", "stock", "capacity"]).subtracting(requiredFields)
            case .basketCreated, .stockAdjusted, .basketRepaired: return []
            }
        }
    }

    /// A basket's state after the change (absolute values: the newest `seq` wins).
    public struct BasketChange: Sendable, Equatable {
        public var seq: Int
        public var stock: Int
        public var capacity: Int
        /// Present on the events that set them (created, repaired).
        public var holdSeconds: Int?
        public var maxPerConsumer: Int?

        public init(seq: Int, stock: Int, capacity: Int, holdSeconds: Int? = nil, maxPerConsumer: Int? = nil) {
            self.seq = seq
            self.stock = stock
            self.capacity = capacity
            self.holdSeconds = holdSeconds
            self.maxPerConsumer = maxPerConsumer
        }
    }

    /// A processed payment webhook.
    public struct Payment: Sendable, Equatable {
        public var eventId: String
        public var reservationId: String
        public var paymentId: String
        public var amountCents: Int?
        public var currency: String
        public var kind: String
        public var outcome: String
    }

    /// The event's type; nil for a type this build does not know (its basket part still counts).
    public var kind: Kind?
    public var basketId: String?
    public var basket: BasketChange?
    public var reservationId: String?
    public var reservation: ReservationRecord?
    public var payment: Payment?

    /// Decodes an entry's fields; nil when it has no type at all (nothing to apply).
    public init?(fields: [String: String]) {
        guard let type = fields[EventField.type.rawValue] else { return nil }
        func text(_ field: EventField) -> String? { fields[field.rawValue] }
        func number(_ field: EventField) -> Int? { text(field).flatMap { Int($0) } }
        kind = Kind(rawValue: type)
        basketId = text(.basket)
        if basketId != nil, let seq = number(.seq), let stock = number(.stock), let capacity = number(.capacity) {
            basket = BasketChange(seq: seq, stock: stock, capacity: capacity, holdSeconds: number(.hold), maxPerConsumer: number(.max))
        }
        reservationId = text(.res)
        if reservationId != nil {
            let kind = kind
            reservation = ReservationRecord { field in
                if let value = fields[field.rawValue] { return value }
                switch field {
                case .status: return kind == .reserved ? ReservationStatus.pending.rawValue : nil
                // Payment events written before `pay` existed carry the id as `payment` only.
                case .pay: return kind == .payment ? text(.payment) : nil
                default: return nil
                }
            }
        }
        if kind == .payment, let eventId = text(.event) {
            payment = Payment(
                eventId: eventId, reservationId: text(.res) ?? "", paymentId: text(.payment) ?? "", amountCents: number(.amount),
                currency: text(.currency) ?? "", kind: text(.kind) ?? "", outcome: text(.outcome) ?? "")
        }
    }
}
