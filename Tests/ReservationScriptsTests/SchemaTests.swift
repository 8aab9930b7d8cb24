import Foundation
import RedisClient
import ReservationCore
import ReservationScripts
import Testing

/// The stored data model, described once, checked without Redis: the prelude's field lists are
/// Swift's field enums; every `XADD` of every script carries what `StoreEvent` decodes for its
/// type, and nothing it does not read; the hot script writes every field a reservation is made
/// with; and what every script shares (the clock) is written once.
@Suite("Stored data model")
struct SchemaTests {
    // MARK: A small reader of the scripts' Lua (only the shapes the scripts use)

    /// The text of the balanced `(...)` or `{...}` starting at `start` (an opening bracket), without
    /// the brackets; quoted strings are skipped whole.
    static func balanced(_ text: Substring) -> Substring? {
        guard let open = text.first, let close = ["(": Character(")"), "{": "}"][open] else { return nil }
        var depth = 0
        var quote: Character?
        for index in text.indices {
            let character = text[index]
            if let open = quote {
                if character == open { quote = nil }
                continue
            }
            switch character {
            case "'", "\"": quote = character
            case "(", "{": depth += 1
            case ")", "}":
                depth -= 1
                if depth == 0 {
                    guard character == close else { return nil }
                    return text[text.index(after: text.startIndex)..<index]
                }
            default: break
            }
        }
        return nil
    }

    /// Splits on the commas outside brackets and quotes, trimming each part.
    static func arguments(_ text: Substring) -> [String] {
        var parts: [String] = []
        var current = ""
        var depth = 0
        var quote: Character?
        for character in text {
            if let open = quote {
                current.append(character)
                if character == open { quote = nil }
                continue
            }
            switch character {
            case "'", "\"": quote = character
            case "(", "{": depth += 1
            case ")", "}": depth -= 1
            case "," where depth == 0:
                parts.append(current.trimmingWhitespace)
                current = ""
                continue
            default: break
            }
            current.append(character)
        }
        if !current.trimmingWhitespace.isEmpty { parts.append(current.trimmingWhitespace) }
        return parts
    }

    /// The text of a quoted Lua string literal, nil for anything else.
    static func literal(_ token: String) -> String? {
        guard token.count >= 2, let first = token.first, first == "'" || first == "\"", token.last == first else { return nil }
        return String(token.dropFirst().dropLast())
    }

    /// `local NAME = {'a', 'b', ...}` of the prelude.
    static func preludeList(_ name: String) -> [String] {
        let source = ReservationScripts.prelude[...]
        guard let range = source.range(of: "local \(name) = "), let list = balanced(source[range.upperBound...]) else { return [] }
        return arguments(list).compactMap(literal)
    }

    /// The field lists a script may splice into an event: the prelude's, or a literal one.
    static func list(_ token: String) -> [String]? {
        if ["RESERVATION", "BASKET", "SETTINGS"].contains(token) { return preludeList(token) }
        guard token.hasPrefix("{") else { return nil }
        return arguments(balanced(token[...]) ?? "").compactMap(literal)
    }

    /// One `XADD` of a script: its type (a literal, or the expression that names it) and the field
    /// names it appends. Pairs come literally, or as `unpack(withRecord({pairs}, record, LIST))`.
    struct Append {
        var script: String
        var type: String
        var names: [String]
    }

    static func appends(of script: RedisScript) throws -> [Append] {
        // (an XADD whose failure the script handles itself is written redis.pcall: read alike)
        let source = ReservationScripts.ownSource(of: script).replacingOccurrences(of: "redis.pcall('XADD'", with: "redis.call('XADD'")
        var found: [Append] = []
        var rest = source[...]
        while let call = rest.range(of: "redis.call('XADD'") {
            let open = source.index(call.lowerBound, offsetBy: "redis.call".count)
            let inside = try #require(balanced(source[open...]), "\(script.name): an XADD with unbalanced brackets")
            var parts = arguments(inside)
            #expect(parts.count >= 3 && parts[2] == "'*'", "\(script.name): XADD key, '*'")
            parts.removeFirst(min(3, parts.count))
            var names: [String] = []
            var pairs = parts
            if parts.count == 1, parts[0].hasPrefix("unpack(withRecord(") {
                let call = parts[0].dropFirst("unpack(withRecord".count)
                let spliced = arguments(try #require(balanced(call), "\(script.name): withRecord(...)"))
                #expect(spliced.count == 3, "\(script.name): withRecord(pairs, record, fields)")
                pairs = arguments(try #require(balanced(spliced[0][...]), "\(script.name): literal pairs"))
                names += try #require(list(spliced.last ?? ""), "\(script.name): a known field list, not \(spliced.last ?? "")")
            }
            #expect(pairs.count % 2 == 0, "\(script.name): name, value pairs")
            var type = ""
            for index in stride(from: 0, to: pairs.count - 1, by: 2) {
                let name = try #require(literal(pairs[index]), "\(script.name): field names are literals, not \(pairs[index])")
                names.append(name)
                if name == "type" { type = literal(pairs[index + 1]) ?? pairs[index + 1] }
            }
            found.append(Append(script: script.name, type: type, names: names))
            rest = source[call.upperBound...]
        }
        // Any other way of appending (another quote, another spelling) is not read here: fail.
        let mentions = source.lowercased().components(separatedBy: "xadd").count - 1
        #expect(mentions == found.count, "\(script.name): every XADD written as redis.call('XADD', ...), \(mentions) vs \(found.count) read")
        return found
    }

    /// The kinds an `XADD`'s type may stand for (a variable type is the status it finishes with).
    static func kinds(_ append: Append) -> [StoreEvent.Kind] {
        if let kind = StoreEvent.Kind(rawValue: append.type) { return [kind] }
        if append.script == "release" && append.type == "newStatus" { return [.cancelled, .expired] }
        return []
    }

    // MARK: Tests

    @Test("the prelude's field lists are Swift's field enums, in order")
    func preludeListsAreTheEnums() {
        #expect(Self.preludeList("RESERVATION") == ReservationField.allCases.map(\.rawValue))
        #expect(Self.preludeList("BASKET") == BasketField.allCases.map(\.rawValue))
        #expect(Self.preludeList("SETTINGS") == BasketSettingField.allCases.map(\.rawValue))
        #expect(Self.preludeList("ROOM") == RoomField.allCases.map(\.rawValue))
        #expect(
            Set(BasketSettingField.allCases.map(\.rawValue)).isSubset(of: BasketField.allCases.map(\.rawValue)), "settings live in the basket hash")
        // Every script is the prelude's definitions it uses, then its own file (Redis knows it by
        // the joined source's SHA); a script pays only for what it uses.
        for script in ReservationScripts.all {
            let own = ReservationScripts.ownSource(of: script)
            #expect(script.source == ReservationScripts.joined(own: own, prelude: ReservationScripts.prelude), "\(script.name)")
            #expect(script.source.hasSuffix(own), "\(script.name)")
        }
        #expect(ReservationScripts.refuseSoldOut.source == ReservationScripts.ownSource(of: ReservationScripts.refuseSoldOut))
        for hot in [ReservationScripts.reserve, ReservationScripts.reserveOne] {
            let hotPrelude = hot.source.dropLast(ReservationScripts.ownSource(of: hot).count)
            #expect(
                hotPrelude.contains("local function nowMs()") && !hotPrelude.contains("RESERVATION"),
                "\(hot.name), the hot path: the clock and small helpers, no record lists")
        }
        let releasePrelude = ReservationScripts.release.source
        for used in [
            "local RESERVATION", "local function nowMs", "local function readRecord", "local function recordReply", "local function withRecord",
        ] {
            #expect(releasePrelude.contains(used), "release uses \(used)")
        }
        #expect(!releasePrelude.contains("local SETTINGS") && !releasePrelude.contains("local function basketView"))
        // basketView uses readRecord, recordReply and BASKET: taken along
        let read = ReservationScripts.basketRead.source
        #expect(read.contains("local BASKET") && read.contains("local function readRecord") && read.contains("local function recordReply"))
    }

    @Test("every XADD of every script carries what StoreEvent reads for its type, and nothing it does not know")
    func eventsMatchTheDecoder() throws {
        var seen: Set<StoreEvent.Kind> = []
        for script in ReservationScripts.all {
            for append in try Self.appends(of: script) {
                let kinds = Self.kinds(append)
                #expect(!kinds.isEmpty, "\(append.script): an event of unknown type \(append.type)")
                #expect(Set(append.names).count == append.names.count, "\(append.script) \(append.type): a field twice: \(append.names)")
                for kind in kinds {
                    seen.insert(kind)
                    let names = Set(append.names)
                    let fits = kind.shapes.contains { $0.required.isSubset(of: names) && names.isSubset(of: $0.required.union($0.optional)) }
                    let closest = kind.shapes.min { $0.required.symmetricDifference(names).count < $1.required.symmetricDifference(names).count }
                    let missing = closest.map { $0.required.subtracting(names).sorted() } ?? []
                    let unknown = closest.map { names.subtracting($0.required.union($0.optional)).sorted() } ?? []
                    #expect(fits, "\(append.script) appends \(kind) of no known shape: without \(missing), with unknown \(unknown)")
                }
            }
        }
        #expect(seen == Set(StoreEvent.Kind.allCases), "every kind is appended by some script: \(seen)")
        #expect(!ReservationScripts.prelude.lowercased().contains("xadd"), "events are appended by the scripts, where this test reads them")
        // Every field name an event may carry is an event field or a reservation field.
        let known = Set(EventField.allCases.map(\.rawValue)).union(ReservationField.allCases.map(\.rawValue))
        for kind in StoreEvent.Kind.allCases {
            #expect(kind.knownFields.isSubset(of: known), "\(kind)")
        }
    }

    @Test("reserve.lua and reserve_one.lua write every field a reservation is made with (they write them in place, for speed)")
    func reserveWritesTheRecord() throws {
        for script in [ReservationScripts.reserve, ReservationScripts.reserveOne] {
            let source = ReservationScripts.ownSource(of: script)
            // (through pcall: a reservation key of the wrong type fails only that grant)
            let call = try #require(source.range(of: "redis.pcall('HSET', reservationKey"), "\(script.name)")
            #expect(source.components(separatedBy: "'HSET', reservationKey").count == 2, "\(script.name) writes a reservation in one place")
            let open = source.index(call.lowerBound, offsetBy: "redis.pcall".count)
            let parts = Self.arguments(try #require(Self.balanced(source[open...]))).dropFirst(2)
            let names = stride(from: parts.startIndex, to: parts.endIndex, by: 2).compactMap { Self.literal(parts[$0]) }
            #expect(Set(names) == Set(ReservationField.allCases.filter(\.setWhenReserved).map(\.rawValue)), "\(script.name)")
        }
    }

    @Test("the clock is read in one place, and no script but the hot one names a reservation's fields itself")
    func sharedOnce() {
        for script in ReservationScripts.all {
            let source = ReservationScripts.ownSource(of: script)
            #expect(!source.contains("'TIME'"), "\(script.name) reads the clock itself (the prelude's nowMs() does)")
            guard script.name != "reserve" && script.name != "reserve_one" else { continue }
            // (`basket`, `status` and `pay` are what scripts change by name; an Idempotency-Key's
            // record, read by refuse_sold_out, has an `exp` of its own.)
            let own: [ReservationField] = script.name == "refuse_sold_out" ? [.basket, .status, .pay, .exp] : [.basket, .status, .pay]
            for field in ReservationField.allCases where !own.contains(field) {
                #expect(!source.contains("'\(field.rawValue)'"), "\(script.name) names the reservation field \(field) (use RESERVATION)")
            }
        }
        #expect(ReservationScripts.prelude.contains("redis.call('TIME')"))
    }

    // MARK: The decoder and the merge rules

    static let record = ReservationRecord(
        basketId: "b", consumerId: "c", quantity: 2, status: .pending, expiresAtMilliseconds: 1000, paymentId: nil)

    static func fields(_ kind: StoreEvent.Kind, record: ReservationRecord? = record) -> [String: String] {
        var fields = ["type": kind.rawValue, "basket": "b", "seq": "3", "stock": "4", "capacity": "9", "res": "00-r", "at": "5"]
        if let record {
            for field in ReservationField.allCases where !record.value(of: field).isEmpty { fields[field.rawValue] = record.value(of: field) }
        }
        return fields
    }

    @Test("StoreEvent decodes each kind's parts; a malformed part is nil and the rest still counts")
    func decoding() throws {
        var reserved = Self.fields(.reserved)
        reserved["status"] = nil
        let event = try #require(StoreEvent(fields: reserved))
        #expect(event.kind == .reserved && event.reservation == Self.record, "a reserved event implies pending")
        #expect(event.basket == StoreEvent.BasketChange(seq: 3, stock: 4, capacity: 9))
        var created = Self.fields(.basketCreated, record: nil)
        created["res"] = nil
        created["hold"] = "60"
        created["max"] = "2"
        #expect(
            StoreEvent(fields: created)?.basket
                == StoreEvent.BasketChange(
                    seq: 3, stock: 4, capacity: 9, settings: BasketSettings(holdSeconds: 60, maxPerConsumer: 2)))
        #expect(StoreEvent(fields: created)?.reservation == nil)
        var payment = Self.fields(.payment)
        payment.merge(["event": "ev", "kind": "payment.succeeded", "payment": "p-1", "amount": "12", "currency": "EUR", "outcome": "confirmed"]) {
            $1
        }
        let paid = try #require(StoreEvent(fields: payment))
        #expect(paid.payment?.eventId == "ev" && paid.payment?.amountCents == 12)
        #expect(paid.reservation?.paymentId == "p-1", "an old payment event names the payment id `payment` only")
        var broken = Self.fields(.cancelled)
        broken["qty"] = "many"
        broken["seq"] = "x"
        let partial = try #require(StoreEvent(fields: broken))
        #expect(partial.reservation == nil && partial.basket == nil && partial.kind == .cancelled)
        #expect(StoreEvent(fields: ["basket": "b"]) == nil, "no type: nothing to apply")
        #expect(StoreEvent(fields: ["type": "from_the_future"])?.kind == nil)
    }

    /// A valid stored text for every field (a new field fails `roundTrip` until it has one here).
    static let sample: [ReservationField: String] = [
        .basket: "b-1", .consumer: "c-1", .qty: "3", .status: "confirmed", .exp: "1700000000000", .pay: "p-1",
    ]

    @Test("every field of a reservation round-trips through its stored text")
    func roundTrip() throws {
        #expect(Set(Self.sample.keys) == Set(ReservationField.allCases), "a sample text for every field")
        let record = try #require(ReservationRecord { Self.sample[$0] })
        for field in ReservationField.allCases {
            #expect(record.value(of: field) == Self.sample[field], "\(field) is read and written back")
        }
    }

    @Test("two accounts of a reservation merge by each field's rule, in either order")
    func mergeRules() {
        let statuses = ReservationStatus.allCases
        for first in statuses {
            for second in statuses {
                for (firstPay, secondPay) in [(nil, nil), ("p-1", nil), (nil, "p-2"), ("p-1", "p-2")] as [(String?, String?)] {
                    var a = Self.record
                    a.status = first
                    a.paymentId = firstPay
                    var b = Self.record
                    b.status = second
                    b.paymentId = secondPay
                    let merged = a.merged(with: b)
                    #expect(merged.status.rank == max(first.rank, second.rank))
                    #expect(merged.status == (second.rank > first.rank ? second : first))
                    #expect(merged.paymentId == (firstPay ?? secondPay), "a payment id, once known, is kept")
                    #expect(b.merged(with: a).status.rank == merged.status.rank, "order-proof")
                }
            }
        }
        var other = Self.record
        other.quantity = 5
        #expect(Self.record.merged(with: other).quantity == 2, "an immutable field keeps the first account's value")
    }

    @Test("the Idempotency-Key fingerprint covers every field of the request, and keeps the form old records were stored in")
    func fingerprints() {
        let request = ReservationRequest(consumerId: "alice", quantity: 2)
        // Every stored property is a fingerprint field: a new request field enters the comparison by default.
        #expect(Mirror(reflecting: request).children.compactMap(\.label) == ReservationRequest.Field.allCases.map(\.rawValue))
        #expect(request.fingerprint == "alice\n2", "records stored by earlier builds still match")
        #expect(ReservationRequest(consumerId: "alice", quantity: 3).fingerprint != request.fingerprint)
        #expect(ReservationRequest(consumerId: "bob", quantity: 2).fingerprint != request.fingerprint)
        #expect(Array(ReservationRequest.Field.allCases.prefix(2)) == [.consumerId, .quantity], "the first two keep their places")
    }
}

extension String {
    fileprivate var trimmingWhitespace: String {
        var text = self[...]
        while let first = text.first, first.isWhitespace { text = text.dropFirst() }
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return String(text)
    }
}
