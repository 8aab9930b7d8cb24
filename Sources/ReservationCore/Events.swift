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
    /// The basket's settings (`BasketSettingField`), carried whole by the events that set them.
    case hold
    case max
    case opens
    case closes
    case paused
    case roomRate = "room_rate"
    case roomSeconds = "room_secs"
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
        case basketUpdated = "basket_updated"
        case stockAdjusted = "stock_adjusted"
        case basketRepaired = "basket_repaired"

        /// The shapes an event of this kind comes in: the fields each always carries, and those
        /// it may carry besides. An appended event must fit one of them exactly.
        public var shapes: [(required: Set<String>, optional: Set<String>)] {
            let basketChange: Set<String> = ["type", "basket", "seq", "stock", "capacity", "at"]
            let record = Set(ReservationField.allCases.map(\.rawValue))
            let madeWith = Set(ReservationField.allCases.filter(\.setWhenReserved).map(\.rawValue))
            let settings = Set(BasketSettingField.allCases.map(\.rawValue))
            switch self {
            // "reserved" leaves its status implied (pending), to keep the hot script small.
            case .reserved:
                let required = basketChange.union(["res"]).union(madeWith.subtracting(["status"])).subtracting(["at"])
                return [(required, record.subtracting(required))]
            case .cancelled, .expired:
                let required = basketChange.union(["res", "from"]).union(madeWith)
                return [(required, record.subtracting(required))]
            case .payment:
                let recorded: Set<String> = ["type", "event", "kind", "res", "payment", "amount", "currency", "outcome", "at"]
                // one that confirmed its reservation carries the basket's change and the whole record
                let confirmed = recorded.union(basketChange).union(madeWith).union(["pay"])
                return [(recorded, ["basket"]), (confirmed, record.subtracting(confirmed))]
            case .basketCreated, .basketUpdated: return [(basketChange.union(settings), [])]
            case .stockAdjusted: return [(basketChange.union(["delta"]), [])]
            case .basketRepaired: return [(basketChange.union(settings).union(["reason"]), [])]
            }
        }

        /// Every field an event of this kind may carry.
        public var knownFields: Set<String> { shapes.reduce(into: []) { $0.formUnion($1.required.union($1.optional)) } }
    }

    /// A basket's state after the change (absolute values: the newest `seq` wins).
    public struct BasketChange: Sendable, Equatable {
        public var seq: Int
        public var stock: Int
        public var capacity: Int
        /// Present, whole, on the events that set them (created, updated, repaired).
        public var settings: BasketSettings?

        public var holdSeconds: Int? { settings?.holdSeconds }
        public var maxPerConsumer: Int? { settings?.maxPerConsumer }

        public init(seq: Int, stock: Int, capacity: Int, settings: BasketSettings? = nil) {
            self.seq = seq
            self.stock = stock
            self.capacity = capacity
            self.settings = settings
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
            // Settings come whole with the events that set them (`hold` is always among them); a
            // malformed one leaves the settings unknown, never half-read.
            let settings = text(.hold) == nil ? nil : BasketSettings { fields[$0.rawValue] }
            basket = BasketChange(seq: seq, stock: stock, capacity: capacity, settings: settings)
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
