import RedisClient
import ReservationCore
import ReservationScripts
import Testing

/// The seam between Swift and `lua/`, checked without Redis: each contract names the KEYS and
/// ARGV its script's header declares, in order; every key of a call shares one Cluster slot; no
/// script builds a key of its own; every reply shape decodes to its outcome, and anything else
/// is an error, never a guess.
@Suite("Script contracts")
struct ScriptContractTests {
    /// `-- KEYS[n] name: ...` and `-- KEYS[n...] a b c: ...` lines of a script's header.
    struct Header: Equatable {
        var keys: [String] = []
        var repeatedKeys: [String] = []
        var arguments: [String] = []
        var repeatedArguments: [String] = []

        init(_ source: String) {
            for line in source.split(separator: "\n") where line.hasPrefix("-- KEYS[") || line.hasPrefix("-- ARGV[") {
                let isKey = line.hasPrefix("-- KEYS[")
                guard let close = line.firstIndex(of: "]") else { continue }
                let index = line[line.index(line.startIndex, offsetBy: 8)..<close]
                let rest = line[line.index(after: close)...]
                // `RESERVATION` stands for the prelude's list of a reservation's fields.
                let names = (rest.split(separator: ":", maxSplits: 1).first ?? "").split(separator: " ").flatMap {
                    ["RESERVATION", "SETTINGS"].contains($0) ? SchemaTests.preludeList(String($0)) : [String($0)]
                }
                if index.hasSuffix("...") {
                    if isKey { repeatedKeys = names } else { repeatedArguments = names }
                } else if let position = Int(index), let name = names.first {
                    if isKey {
                        #expect(position == keys.count + 1, "KEYS numbered in order: \(line)")
                        keys.append(name)
                    } else {
                        #expect(position == arguments.count + 1, "ARGV numbered in order: \(line)")
                        // a field list (SETTINGS) fills one place per field
                        arguments += rest.hasPrefix(" SETTINGS:") ? names : [name]
                    }
                }
            }
        }
    }

    static func check<Call: ScriptCall>(_ type: Call.Type, sourceLocation: SourceLocation = #_sourceLocation) {
        let header = Header(ReservationScripts.ownSource(of: Call.script))
        #expect(!header.keys.isEmpty, "\(Call.script.name) declares its keys", sourceLocation: sourceLocation)
        #expect(header.keys == Call.keyNames, "KEYS of \(Call.script.name)", sourceLocation: sourceLocation)
        #expect(header.repeatedKeys == Call.repeatedKeyNames, "repeated KEYS of \(Call.script.name)", sourceLocation: sourceLocation)
        #expect(header.arguments == Call.argumentNames, "ARGV of \(Call.script.name)", sourceLocation: sourceLocation)
        #expect(header.repeatedArguments == Call.repeatedArgumentNames, "repeated ARGV of \(Call.script.name)", sourceLocation: sourceLocation)
    }

    /// A call's keys and arguments fill the declared places exactly, and share one slot.
    static func checkShape<Call: ScriptCall>(_ call: Call, items: Int = 0, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(call.keys.count == Call.keyNames.count + items * Call.repeatedKeyNames.count, sourceLocation: sourceLocation)
        #expect(call.arguments.count == Call.argumentNames.count + items * Call.repeatedArgumentNames.count, sourceLocation: sourceLocation)
        #expect(Set(call.keys.map(RedisHashSlot.slot(of:))).count == 1, "one slot: \(call.keys)", sourceLocation: sourceLocation)
    }

    static let record = ReservationRecord(
        basketId: "b-1", consumerId: "c-1", quantity: 2, status: .confirmed, expiresAtMilliseconds: 1_700_000_000_000, paymentId: "p")

    @Test("each contract names the KEYS and ARGV its script's header declares, in order")
    func headers() {
        // reserve_one.lua is reserve.lua for one request: the repeated places once, in line
        let one = Header(ReservationScripts.ownSource(of: ReserveCall.script))
        #expect(ReserveCall.script.name == "reserve_one" && one.repeatedKeys.isEmpty && one.repeatedArguments.isEmpty)
        #expect(one.keys == ReserveCall.keyNames + ReserveCall.repeatedKeyNames)
        #expect(one.arguments == ReserveCall.argumentNames + ReserveCall.repeatedArgumentNames)
        Self.check(ReserveBatchCall.self)
        Self.check(CancelReservationCall.self)
        Self.check(ExpireHoldsCall.self)
        Self.check(DueHoldsCall.self)
        Self.check(RefuseSoldOutCall.self)
        Self.check(PaymentCall.self)
        Self.check(CreateBasketCall.self)
        Self.check(AdjustBasketCall.self)
        Self.check(RepairReservationsCall.self)
        Self.check(RepairBasketCall.self)
        Self.check(RepairLeaseCall.self)
        Self.check(RepairUnitsCall.self)
        Self.check(UpdateBasketCall.self)
        Self.check(BasketViewCall.self)
        // The repair writes every field of a reservation: a new field fails here until the script has it.
        #expect(RepairReservationsCall.repeatedArgumentNames == ["id"] + ReservationField.allCases.map(\.rawValue) + ["ttl"])
    }

    @Test("every call fills its declared places and touches keys of one Cluster slot")
    func shapes() {
        for basket in ["b-1", "sneakers:42", "x", String(repeating: "z", count: 128)] {
            let partition = Keyspace.partition(ofBasket: basket)
            for key in [nil, "key/with{braces}"] as [String?] {
                for limit in [0, 5] {
                    Self.checkShape(
                        ReserveCall(
                            basketId: basket, consumerId: "c", quantity: 1, reservationId: "\(partition)-abc",
                            attemptsPerSecond: limit, idempotencyKey: key), items: 1)
                }
            }
            // a coalesced call: the basket's keys once, then each request's (with and without a key)
            let requests = (0..<3).map { index in
                ReserveCall(
                    basketId: basket, consumerId: "c\(index)", quantity: 1, reservationId: "\(partition)-r\(index)", attemptsPerSecond: 5,
                    idempotencyKey: index == 1 ? nil : "k{\(index)}")
            }
            Self.checkShape(ReserveBatchCall(requests), items: 3)
            #expect(ReserveBatchCall(requests).keys.prefix(ReserveCall.keyNames.count) == requests[0].keys.prefix(ReserveCall.keyNames.count))
            let target = ReleaseTarget(reservationId: "01-abc", basketId: basket, consumerId: "c")
            Self.checkShape(CancelReservationCall(target, partition: partition), items: 1)
            Self.checkShape(
                RefuseSoldOutCall(
                    basketId: basket, request: ReservationRequest(consumerId: "c", quantity: 1), idempotencyKey: "k{1}", refusalSeconds: 300))
            Self.checkShape(ExpireHoldsCall([target, target, target], partition: partition), items: 3)
            let event = PaymentCall.Event(
                eventId: "ev{1}", type: "payment.succeeded", reservationId: "01-abc", paymentId: "p", amountCents: 1, currency: "EUR")
            Self.checkShape(PaymentCall(event, partition: partition, basketId: basket))
            Self.checkShape(PaymentCall(event, partition: partition, basketId: nil))
            Self.checkShape(CreateBasketCall(basketId: basket, stock: 1, holdSeconds: 1, maxPerConsumer: 1))
            Self.checkShape(AdjustBasketCall(basketId: basket, delta: -1, maxCapacity: 10))
            Self.checkShape(UpdateBasketCall(basketId: basket, change: .init(opensAtMilliseconds: .some(nil), paused: true)))
            Self.checkShape(BasketViewCall(basketId: basket))
            let lease = RepairLease(token: "t-1", milliseconds: 30_000)
            Self.checkShape(RepairReservationsCall([("01-a", Self.record), ("01-b", Self.record)], basketId: basket, lease: lease), items: 2)
            let state = BasketState(stock: 1, pending: 0, confirmed: 2, capacity: 3, holdSeconds: 60, maxPerConsumer: 2)
            Self.checkShape(
                RepairBasketCall(basketId: basket, state: state, seq: 4, reason: "counters", lease: lease))
            Self.checkShape(RepairUnitsCall(basketId: basket, units: [("c1", 2), ("c2", 0)], first: true, lease: lease), items: 1)
            Self.checkShape(RepairLeaseCall(basketId: basket, mode: .acquire, lease: lease))
            Self.checkShape(RepairLeaseCall(basketId: basket, mode: .release, lease: lease))
        }
    }

    @Test("no script builds a key name of its own: every key comes in KEYS")
    func noKeysBuiltInLua() {
        for script in ReservationScripts.all {
            #expect(!script.source.contains("prefix"), "\(script.name) builds keys from a prefix")
            #expect(!script.source.contains("..  ':"), "\(script.name)")
            for fragment in [":b:", ":r:", ":u:", ":i:", ":rl:", ":wh:", ":holds", ":events", ":baskets"] {
                #expect(
                    !script.source.contains("'\(fragment)") && !script.source.contains("\"\(fragment)"),
                    "\(script.name) names a key (\(fragment))")
            }
        }
    }

    @Test("the cluster hash slot matches Redis' own answers")
    func hashSlots() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        #expect(RedisHashSlot.slot(of: "foo") == 12182)
        #expect(RedisHashSlot.slot(of: "123456789") == 12739)
        #expect(RedisHashSlot.slot(of: "{user1000}.following") == RedisHashSlot.slot(of: "{user1000}.followers"))
        #expect(RedisHashSlot.slot(of: "foo{}{bar}") == 8363, "an empty tag: the whole key is hashed")
        #expect(RedisHashSlot.slot(of: "foo{{bar}}zap") == 4015, "the tag is {bar")
        #expect(RedisHashSlot.slot(of: "{bar") == 4015)
        #expect(RedisHashSlot.slot(of: "{rg07}:b:x") == 12999)
        #expect(RedisHashSlot.slot(of: "rg07") == 12999)
    }

    static func bulk(_ text: String) -> RedisValue { .bulk(Array(text.utf8)) }
    static func reply(_ words: String...) -> RedisValue { .array(words.map(bulk)) }

    @Test("reserve replies decode to every outcome; anything else is an error")
    func reserveReplies() throws {
        #expect(
            try ReserveCall.decodeAnswer(.array([Self.bulk("granted"), Self.bulk("03-x"), .integer(1_700_000_000_000), .integer(4)]))
                == .granted(reservationId: "03-x", expiresAtMilliseconds: 1_700_000_000_000, remaining: 4))
        // A replay from an idempotency record: the same answer as bulk strings.
        #expect(
            try ReserveCall.decodeAnswer(Self.reply("granted", "03-x", "17", "0"))
                == .granted(reservationId: "03-x", expiresAtMilliseconds: 17, remaining: 0))
        #expect(try ReserveCall.decodeAnswer(Self.reply("sold_out")) == .soldOut)
        #expect(try ReserveCall.decodeAnswer(Self.reply("sold_out", "replay")) == .soldOutReplayed, "a replay says nothing of the basket now")
        #expect(try ReserveCall.decodeAnswer(Self.reply("limit_exceeded", "replay")) == .limitExceeded)
        #expect(try RefuseSoldOutCall.decode(Self.reply("ask")) == .ask)
        #expect(try RefuseSoldOutCall.decode(Self.reply("sold_out")) == .answered(.soldOut))
        #expect(
            try RefuseSoldOutCall.decode(Self.reply("granted", "03-x", "17", "0"))
                == .answered(.granted(reservationId: "03-x", expiresAtMilliseconds: 17, remaining: 0)))
        #expect(throws: StoreReplyError.self) { try RefuseSoldOutCall.decode(Self.reply("unavailable")) }
        #expect(try ReserveCall.decodeAnswer(Self.reply("limit_exceeded")) == .limitExceeded)
        #expect(try ReserveCall.decodeAnswer(Self.reply("basket_not_found")) == .basketNotFound)
        #expect(try ReserveCall.decodeAnswer(Self.reply("unavailable")) == .unavailable)
        #expect(try ReserveCall.decodeAnswer(Self.reply("idempotency_key_reused")) == .idempotencyKeyReused)
        #expect(try ReserveCall.decodeAnswer(.array([Self.bulk("rate_limited"), .integer(250)])) == .rateLimited(retryAfterMilliseconds: 250))
        // An opening time no basket can have (past the year 9999): the basket is not served.
        #expect(
            try ReserveCall.decodeAnswer(.array([Self.bulk("sale_not_open"), .integer(999_999_999_999_999), .integer(5)])) == .unavailable)
        #expect(
            try ReserveCall.decodeAnswer(.array([Self.bulk("sale_not_open"), .integer(1_700_000_000_000), .integer(5)]))
                == .saleNotOpen(opensAtMilliseconds: 1_700_000_000_000, retryAfterMilliseconds: 5))
        // What decodes as a grant (a status reply too) is what WAIT holds and marks.
        let statusGrant: RedisValue = .array([.array([.status("granted"), Self.bulk("03-x"), .integer(17), .integer(0)])])
        #expect(try ReserveCall.decode(statusGrant) == .granted(reservationId: "03-x", expiresAtMilliseconds: 17, remaining: 0))
        #expect(ReserveCall.anyGranted(statusGrant))
        #expect(throws: RedisError.notReplicated) { try ReserveCall.decode(ReserveCall.markingGrantsUnreplicated(statusGrant)) }
        // A window reply is range-checked before anyone does arithmetic with it.
        #expect(
            try ReserveCall.decodeAnswer(.array([Self.bulk("rate_limited"), .integer(Int64.max)])) == .rateLimited(retryAfterMilliseconds: 60_000))
        #expect(try ReserveCall.decodeAnswer(.array([Self.bulk("rate_limited"), .integer(-5)])) == .rateLimited(retryAfterMilliseconds: 1))
        for bad: RedisValue in [
            Self.bulk("granted|x|1|2"), .null, .array([]), Self.reply("granted", "x"), Self.reply("granted", "x", "soon", "1"), Self.reply("nope"),
        ] {
            #expect(throws: StoreReplyError.self) { try ReserveCall.decodeAnswer(bad) }
        }
        // A call answers a list, one answer per request: a call of one takes exactly one.
        #expect(try ReserveCall.decode(.array([Self.reply("sold_out")])) == .soldOut)
        for bad: RedisValue in [Self.reply("sold_out"), .array([]), .array([Self.reply("sold_out"), Self.reply("sold_out")]), .null] {
            #expect(throws: StoreReplyError.self) { try ReserveCall.decode(bad) }
        }
        // A request's own Redis error is that request's failure only.
        let batch = try ReserveBatchCall.decode(.array([Self.reply("sold_out"), Self.reply("failed", "WRONGTYPE x"), Self.reply("limit_exceeded")]))
        #expect(batch.count == 3)
        #expect((try? batch[0].get()) == .soldOut && (try? batch[2].get()) == .limitExceeded)
        #expect(throws: RedisError.server("WRONGTYPE x")) { try batch[1].get() }
        #expect(throws: StoreReplyError.self) { try ReserveBatchCall.decode(.array([])) }
        #expect(throws: StoreReplyError.self) { try ReserveBatchCall.decode(Self.bulk("granted")) }
        // held for WAIT when any request was granted
        #expect(ReserveCall.anyGranted(.array([Self.reply("sold_out"), Self.reply("granted", "03-x", "17", "0")])))
        #expect(!ReserveCall.anyGranted(.array([Self.reply("sold_out"), Self.reply("granted|x")])))
    }

    @Test("basket, release, payment and repair replies decode to every outcome")
    func otherReplies() throws {
        let state = BasketState(stock: 5, pending: 1, confirmed: 2, capacity: 8, holdSeconds: 60, maxPerConsumer: 2)
        // the BASKET fields (no window: empty, as a hash written before windows reads), then Redis's clock
        let view = Self.reply("ok", "5", "1", "2", "8", "60", "2", "", "", "0", "", "", "1700000000000")
        #expect(try CreateBasketCall.decode(view) == .created(state))
        #expect(throws: StoreReplyError.self) { try CreateBasketCall.decode(Self.reply("ok", "5", "1", "2", "8", "60", "2")) }
        let windowed = Self.reply("ok", "5", "1", "2", "8", "60", "2", "1700000000000", "1700000360000", "1", "", "", "1700000001000")
        guard case .created(let read) = try CreateBasketCall.decode(windowed) else { throw StoreReplyError("test", .null) }
        #expect(
            read.settings
                == BasketSettings(
                    holdSeconds: 60, maxPerConsumer: 2, opensAtMilliseconds: 1_700_000_000_000, closesAtMilliseconds: 1_700_000_360_000, paused: true)
        )
        #expect(read.observedAtMilliseconds == 1_700_000_001_000 && read.settings.state(at: 1_700_000_001_000) == .paused)
        #expect(throws: StoreReplyError.self) {
            try BasketViewCall.decode(Self.reply("ok", "5", "1", "2", "8", "60", "2", "soon", "", "0", "", "", "1700000000000"))
        }
        // A waiting room is both its fields or neither, each in range.
        let roomed = Self.reply("ok", "5", "1", "2", "8", "60", "2", "", "", "0", "120", "45", "1700000000000")
        guard case .created(let withRoom) = try CreateBasketCall.decode(roomed) else { throw StoreReplyError("test", .null) }
        #expect(withRoom.settings.waitingRoom == WaitingRoomSettings(admitPerMinute: 120, admissionSeconds: 45))
        for (rate, seconds) in [("120", ""), ("", "45"), ("0", "45"), ("120", "29"), ("1000001", "45"), ("12x", "45")] {
            #expect(throws: StoreReplyError.self) {
                try BasketViewCall.decode(Self.reply("ok", "5", "1", "2", "8", "60", "2", "", "", "0", rate, seconds, "1700000000000"))
            }
        }
        #expect(try BasketViewCall.decode(Self.reply("basket_not_found")) == nil)
        #expect(try UpdateBasketCall.decode(view) == .updated(state))
        #expect(try UpdateBasketCall.decode(Self.reply("invalid_window")) == .invalidWindow)
        #expect(try CreateBasketCall.decode(Self.reply("basket_exists")) == .exists)
        #expect(try AdjustBasketCall.decode(view) == .adjusted(state))
        #expect(try AdjustBasketCall.decode(Self.reply("basket_not_found")) == .basketNotFound)
        #expect(try AdjustBasketCall.decode(Self.reply("insufficient_stock")) == .insufficientStock)
        #expect(try AdjustBasketCall.decode(Self.reply("capacity_exceeded")) == .capacityExceeded)
        #expect(try AdjustBasketCall.decode(Self.reply("unavailable")) == .unavailable)
        #expect(throws: StoreReplyError.self) { try AdjustBasketCall.decode(Self.reply("ok", "many")) }

        let record = ReservationField.allCases.map { Self.bulk(Self.record.value(of: $0)) }
        #expect(try CancelReservationCall.decode(.array([Self.bulk("cancelled")] + record)) == .cancelled(Self.record))
        #expect(try CancelReservationCall.decode(Self.reply("reservation_not_found")) == .reservationNotFound)
        #expect(try CancelReservationCall.decode(Self.reply("reservation_expired")) == .reservationExpired)
        #expect(try CancelReservationCall.decode(Self.reply("unavailable")) == .unavailable)
        #expect(try CancelReservationCall.decode(Self.reply("stale_keys")) == .staleKeys)
        #expect(throws: StoreReplyError.self) { try CancelReservationCall.decode(Self.reply("cancelled", "b", "c", "0", "pending", "1", "")) }
        #expect(try ExpireHoldsCall.decode(.array([Self.bulk("expired"), .integer(3), .integer(2)])) == (3, 2))
        #expect(throws: StoreReplyError.self) { try ExpireHoldsCall.decode(.array([Self.bulk("expired"), .integer(3)])) }
        #expect(throws: StoreReplyError.self) { try ExpireHoldsCall.decode(.array([Self.bulk("expired"), .integer(-1), .integer(0)])) }
        #expect(throws: StoreReplyError.self) { try ExpireHoldsCall.decode(.integer(3)) }

        for outcome in PaymentOutcome.allCases {
            #expect(try PaymentCall.decode(Self.reply("processed", outcome.rawValue)) == .processed(outcome))
        }
        #expect(try PaymentCall.decode(Self.reply("duplicate")) == .duplicate)
        #expect(try PaymentCall.decode(Self.reply("unavailable")) == .unavailable)
        #expect(try PaymentCall.decode(Self.reply("stale_keys")) == .staleKeys)
        #expect(throws: StoreReplyError.self) { try PaymentCall.decode(Self.reply("processed", "maybe")) }

        #expect(try RepairReservationsCall.decode(.array([Self.bulk("ok"), .integer(2)])) == .done)
        #expect(try RepairReservationsCall.decode(Self.reply("lease_lost")) == .leaseLost)
        #expect(try RepairBasketCall.decode(Self.reply("ok")) == .done)
        #expect(try RepairBasketCall.decode(Self.reply("lease_lost")) == .leaseLost)
        #expect(throws: StoreReplyError.self) { try RepairBasketCall.decode(.status("OK")) }
        #expect(try RepairLeaseCall.decode(Self.reply("acquired")) == .acquired)
        #expect(try RepairLeaseCall.decode(.array([Self.bulk("busy"), .integer(900)])) == .busy(leaseLeftMilliseconds: 900))
        #expect(try RepairLeaseCall.decode(Self.reply("released")) == .released)
        #expect(try RepairLeaseCall.decode(Self.reply("lost")) == .lost)
        #expect(throws: StoreReplyError.self) { try RepairLeaseCall.decode(Self.reply("maybe")) }
    }

    @Test("a reservation record round-trips through its stored fields; malformed ones are refused")
    func records() {
        let stored = Dictionary(uniqueKeysWithValues: ReservationField.allCases.map { ($0, Self.record.value(of: $0)) })
        #expect(ReservationRecord { stored[$0] } == Self.record)
        var unpaid = stored
        unpaid[.pay] = ""
        #expect(ReservationRecord { unpaid[$0] }?.paymentId == nil)
        for (field, bad) in [(ReservationField.qty, "0"), (.qty, "-1"), (.qty, "1e3"), (.status, "paid"), (.exp, "soon")] {
            var broken = stored
            broken[field] = bad
            #expect(ReservationRecord { broken[$0] } == nil, "\(field)=\(bad)")
        }
        #expect(ReservationRecord { $0 == .basket ? nil : stored[$0] } == nil)
    }
}
