public import RedisClient
import ReservationCore

/// What a verified payment webhook did.
public enum PaymentOutcome: String, Sendable, CaseIterable {
    case confirmed
    case refundRequired = "refund_required"
    case failed
    case unknownReservation = "unknown_reservation"
}

/// `lua/payment.lua`: apply one payment event, at most once per event id.
public struct PaymentCall: ScriptCall {
    public enum Outcome: Sendable, Equatable {
        case processed(PaymentOutcome)
        case duplicate
        case unavailable
        /// The reservation's basket is not the one read before the call: read again.
        case staleKeys
    }

    public struct Event: Sendable, Equatable {
        public var eventId: String
        public var type: String
        public var reservationId: String
        public var paymentId: String
        public var amountCents: Int64
        public var currency: String

        public init(eventId: String, type: String, reservationId: String, paymentId: String, amountCents: Int64, currency: String) {
            self.eventId = eventId
            self.type = type
            self.reservationId = reservationId
            self.paymentId = paymentId
            self.amountCents = amountCents
            self.currency = currency
        }
    }

    public static let script = ReservationScripts.payment
    /// A processed payment, and a duplicate delivery (it tells the provider the first one took
    /// effect), wait for the replicas; `unavailable` and `stale_keys` changed nothing.
    public static let replication = RedisReplication.when { RedisValue.isAnswer($0, oneOf: "processed", "duplicate") }
    public static let keyNames = ["claim", "reservation", "holds", "stream", "basket"]
    public static let argumentNames = [
        "eventId", "type", "reservationId", "paymentId", "amountCents", "currency", "claimSeconds", "basketId",
    ]

    public let keys: [String]
    public let arguments: [RedisArgument]

    /// `basketId` is the reservation's basket as read just before (nil: no such reservation).
    public init(_ event: Event, partition: Int, basketId: String?) {
        keys = [
            Keyspace.webhookClaim(eventId: event.eventId, partition: partition),
            Keyspace.reservation(event.reservationId, partition: partition),
            Keyspace.holds(partition), Keyspace.stream(partition),
            // Without a reservation no basket is touched; any key of the partition fills the place.
            basketId.map { Keyspace.basket($0, partition: partition) } ?? Keyspace.holds(partition),
        ]
        arguments = [
            .string(event.eventId), .string(event.type), .string(event.reservationId), .string(event.paymentId),
            .int(Int(event.amountCents)), .string(event.currency), .int(Retention.webhookClaimSeconds), .string(basketId ?? ""),
        ]
    }

    public static func decode(_ reply: RedisValue) throws -> Outcome {
        let (answer, rest) = try reply.answer(of: "payment")
        switch answer {
        case "processed":
            guard rest.count == 1, let outcome = rest[0].string.flatMap(PaymentOutcome.init(rawValue:)) else {
                throw StoreReplyError("payment", reply)
            }
            return .processed(outcome)
        case "duplicate": return .duplicate
        case "unavailable": return .unavailable
        case "stale_keys": return .staleKeys
        default: throw StoreReplyError("payment", reply)
        }
    }
}
