public import Foundation
public import RedisClient
import ReservationCore
import ReservationScripts

/// Coalesced reservations against the same requests one by one: random mixes of requests, each
/// decided twice on two baskets made alike (same partition, same settings, same prior state,
/// consumers and keys named alike): once as calls of their own in a row and once as one
/// coalesced call (`ReserveBatchCall`, what the gateway sends), each in a `MULTI` so nothing
/// runs between the calls. Every answer and everything stored (the
/// basket, the consumers' units, reservations, holds, Idempotency-Key records and their
/// retention, rate-limit windows, events in order) must be the same, up to the names that tell
/// the two sides apart and the clock readings (expiry times, retry times).
public struct ReserveEquivalence: Sendable {
    /// What a run saw: the kinds of answer it produced (a run that never produced one proves
    /// nothing about it) and every difference found.
    public struct Report: Sendable {
        public var requests = 0
        public var kinds: Set<String> = []
        public var differences: [String] = []
    }

    /// Every kind of answer a run must have produced for its equality to mean anything.
    public static let expectedKinds: Set<String> = [
        "granted", "granted (replay)", "granted (legacy replay)", "sold_out", "sold_out (replay)", "sold_out (closing)",
        "limit_exceeded", "basket_not_found", "unavailable", "rate_limited", "idempotency_key_reused", "sale_not_open", "sale_paused",
        "sale_closed", "admission_required", "failed", "books mismatch", "calls of 64", "grant refused by its corrupt reservation key",
        "corrupt consumer count refused",
    ]

    /// `direct`: a client of the server that holds `partition` (on a cluster, a standalone
    /// client of the slot's primary: MULTI must go to it); it must have the scripts loaded.
    public let partition: Int
    public let direct: RedisClient

    public init(partition: Int, direct: RedisClient) {
        self.partition = partition
        self.direct = direct
    }

    enum Variant: CaseIterable {
        case open, room, closingLater, booksBelowStock, booksAboveStock, paused, notOpen, closed, repair, missing, missingAndLost,
            halfWritten, unreadableWindow, fractionalStock, corruptMismatch, corruptHolds, corruptStream, corruptReservation

        /// Corrupt counters and shared keys now fail closed (`unavailable`, nothing written)
        /// where the script before coalescing half wrote a grant or sold fractions.
        var changedOnPurpose: Bool {
            switch self {
            case .fractionalStock, .corruptMismatch, .corruptHolds, .corruptStream, .corruptReservation: return true
            default: return false
            }
        }
    }

    enum Admission { case none, valid, expired, otherRoom }

    struct Request {
        var consumer: Int
        var quantity: Int
        var key: Int?
        var admission: Admission
    }

    struct Round {
        var variant: Variant
        var stock: Int
        var maxPerConsumer: Int
        var attemptsPerSecond: Int
        var marker: Bool
        var heldBefore: [Int: String]
        var legacyRecord: String?
        var wrongTypeRecord: Bool
        var requests: [Request]
    }

    public func run(rounds: Int, seed: UInt64) async throws -> Report {
        var random = SeededGenerator(state: seed)
        var report = Report()
        for number in 0..<rounds {
            let round = Self.makeRound(number, &random)
            try await compare(round, number: number, into: &report)
        }
        return report
    }

    static func makeRound(_ number: Int, _ random: inout SeededGenerator) -> Round {
        let weighted: [(Variant, Int)] = [
            (.open, 30), (.room, 14), (.closingLater, 8), (.booksBelowStock, 8), (.booksAboveStock, 5), (.paused, 4), (.notOpen, 4),
            (.closed, 4), (.repair, 3), (.missing, 5), (.missingAndLost, 3), (.halfWritten, 3), (.unreadableWindow, 3),
            (.fractionalStock, 2), (.corruptMismatch, 2), (.corruptHolds, 2), (.corruptStream, 2),
            (.corruptReservation, 2),
        ]
        var pick = Int.random(in: 0..<weighted.reduce(0) { $0 + $1.1 }, using: &random)
        var variant = Variant.open
        for (candidate, weight) in weighted {
            if pick < weight {
                variant = candidate
                break
            }
            pick -= weight
        }
        // (a rare corruption every twentieth round, so that every run meets it)
        if number % 20 == 7 { variant = .corruptReservation }
        let consumers = Int.random(in: 1...6, using: &random)
        let maxPerConsumer = Int.random(in: 1...3, using: &random)
        // every tenth round a full call (the most the gateway puts in one), else a short one
        let count = number % 10 == 9 ? ReserveEquivalence.fullCall : Int.random(in: 1...24, using: &random)
        var requests: [Request] = []
        for _ in 0..<count {
            let quantity = [1, 1, 1, 2, 3].randomElement(using: &random)!
            let key: Int? = Bool.random(using: &random) ? nil : Int.random(in: 0...3, using: &random)
            let admission = [Admission.valid, .valid, .valid, .expired, .otherRoom, .none].randomElement(using: &random)!
            requests.append(Request(consumer: Int.random(in: 0..<consumers, using: &random), quantity: quantity, key: key, admission: admission))
        }
        var heldBefore: [Int: String] = [:]
        if Int.random(in: 0..<4, using: &random) == 0 { heldBefore[0] = String(Int.random(in: 1...maxPerConsumer, using: &random)) }
        // a count the scripts cannot use (not a number, a fraction, one that would overflow, a
        // negative one): that consumer's requests are refused `unavailable` and the basket marked,
        // where the script before coalescing failed (a 500) or, for a negative count, sold past the limit
        if Int.random(in: 0..<12, using: &random) == 0 {
            heldBefore[2] = ["not a number", "1.5", "9223372036854775807", "-2"].randomElement(using: &random)!
        }
        let legacy: String? =
            switch Int.random(in: 0..<10, using: &random) {
            case 0: "granted|legacy-grant|1700000000000|4"
            case 1: "sold_out"
            default: nil
            }
        return Round(
            variant: variant, stock: Int.random(in: 1...12, using: &random), maxPerConsumer: maxPerConsumer,
            attemptsPerSecond: Bool.random(using: &random) ? 0 : Int.random(in: 1...4, using: &random), marker: Bool.random(using: &random),
            heldBefore: heldBefore, legacyRecord: legacy, wrongTypeRecord: Int.random(in: 0..<10, using: &random) == 0, requests: requests)
    }

    static let fullCall = ReserveBatchCall.maxRequests

    /// One side of a round: its basket and the prefix of its consumers' names.
    struct Side {
        let basketId: String
        let consumerPrefix: String
        let reservationIds: [String]

        func consumer(_ index: Int) -> String { consumerPrefix + String(index) }
    }

    func compare(_ round: Round, number: Int, into report: inout Report) async throws {
        let ids = ReservationIdGenerator()
        func side(_ tag: String) -> Side {
            var basketId = ""
            repeat { basketId = "eq\(tag)-" + UUID().uuidString.lowercased().prefix(12) } while Keyspace.partition(ofBasket: basketId) != partition
            return Side(
                basketId: basketId, consumerPrefix: "eq\(tag)-" + UUID().uuidString.lowercased().prefix(8) + "-c",
                reservationIds: round.requests.map { _ in ids.next(partition: partition) })
        }
        // the script before coalescing, one call each; the script now, one call each; and now, one call
        let sides = [side("o"), side("a"), side("b")]
        let marker = Keyspace.partitionMarker(partition)
        _ = try await direct.send(round.marker ? ["SET", .string(marker), "1"] : ["DEL", .string(marker)])
        let corruptStore =
            round.variant == .corruptHolds ? Keyspace.holds(partition) : round.variant == .corruptStream ? Keyspace.stream(partition) : nil
        let streamStart = try await lastStreamId()
        let clock = try await redisMilliseconds()
        for side in sides { try await prepare(side, round, now: clock) }
        // (after the baskets are made: making one appends to the stream)
        var setAside = false
        if let corruptStore {
            setAside = try await direct.send("EXISTS", .string(corruptStore)).int == 1
            if setAside { _ = try await direct.send("RENAME", .string(corruptStore), .string(corruptStore + ":aside")) }
            _ = try await direct.send("SET", .string(corruptStore), "not a zset nor a stream")
        }

        let calls = { (side: Side) in
            round.requests.enumerated().map { index, request in
                ReserveCall(
                    basketId: side.basketId, request: ReservationRequest(consumerId: side.consumer(request.consumer), quantity: request.quantity),
                    reservationId: side.reservationIds[index], attemptsPerSecond: round.attemptsPerSecond,
                    idempotencyKey: request.key.map { "key-\($0)" }, refusalSeconds: 300,
                    admission: Self.admission(request.admission, now: clock))
            }
        }
        // Each side in a MULTI with the reads of the consumers' rate-limit windows (a second
        // long: read before they can lapse).
        let windows = { (side: Side) -> [[RedisArgument]] in
            Self.consumers(round).flatMap { consumer -> [[RedisArgument]] in
                let window = RedisArgument.string(Keyspace.rateLimit(consumerId: side.consumer(consumer), partition: partition))
                return [["GET", window], ["PTTL", window]]
            }
        }
        func errorOrAnswer(_ reply: RedisValue, _ decode: (RedisValue) throws -> ReserveCall.Outcome) -> Result<ReserveCall.Outcome, any Error> {
            if case .error(let message) = reply { return .failure(RedisError.server(message)) }
            return Result { try decode(reply) }
        }
        let beforeCommands = calls(sides[0]).map { Self.beforeCoalescing($0) }
        let before = try await execute(beforeCommands + windows(sides[0]))
        let beforeAnswers = before.prefix(beforeCommands.count).map { errorOrAnswer($0, ReserveCall.decodeAnswer) }
        let oneByOneCommands = calls(sides[1]).map { Self.evalSHA(ReserveCall.script, keys: $0.keys, arguments: $0.arguments) }
        let oneByOne = try await execute(oneByOneCommands + windows(sides[1]))
        let oneByOneAnswers = oneByOne.prefix(oneByOneCommands.count).map { errorOrAnswer($0, ReserveCall.decode) }
        let batch = ReserveBatchCall(calls(sides[2]))
        let together = try await execute([Self.evalSHA(ReserveBatchCall.script, keys: batch.keys, arguments: batch.arguments)] + windows(sides[2]))
        let togetherAnswers = try ReserveBatchCall.decode(together[0])
        report.requests += round.requests.count
        if round.requests.count == Self.fullCall { report.kinds.insert("calls of 64") }

        let context = "round \(number) (\(round.variant), \(round.requests.count) requests)"
        guard togetherAnswers.count == oneByOneAnswers.count else {
            report.differences.append("\(context): \(togetherAnswers.count) answers for \(oneByOneAnswers.count) requests")
            return
        }
        // what the coalesced call is compared with: the calls of one, and (but where coalescing
        // changed a behaviour on purpose) the script before it
        var references = [("one by one", sides[1], oneByOneAnswers, oneByOne.dropFirst(oneByOneCommands.count))]
        if !round.variant.changedOnPurpose && round.heldBefore[2] == nil {
            references.append(("before coalescing", sides[0], beforeAnswers, before.dropFirst(beforeCommands.count)))
        }
        var coalescedState = try await state(of: sides[2], round, streamStart: streamStart)
        coalescedState.merge(Self.windowState(together.dropFirst(), round)) { $1 }
        if coalescedState["basket"]?.contains("mismatch") == true { report.kinds.insert("books mismatch") }
        if round.variant == .corruptReservation, coalescedState["basket"]?.contains("pending=0") == true,
            togetherAnswers.contains(where: { if case .success(.unavailable) = $0 { return true } else { return false } })
        {
            report.kinds.insert("grant refused by its corrupt reservation key")
        }
        if round.heldBefore[2] != nil, coalescedState["basket"]?.contains("mismatch") == true,
            zip(round.requests, togetherAnswers).contains(where: { request, answer in
                if request.consumer == 2, case .success(.unavailable) = answer { return true } else { return false }
            })
        {
            report.kinds.insert("corrupt consumer count refused")
        }
        for index in togetherAnswers.indices {
            let (coalesced, kind) = describe(togetherAnswers[index], index: index, side: sides[2])
            report.kinds.insert(kind)
            for (name, side, answers, _) in references {
                let (reference, _) = describe(answers[index], index: index, side: side)
                if reference != coalesced { report.differences.append("\(context), request \(index): \(name) \(reference), coalesced \(coalesced)") }
            }
        }
        for (name, side, _, windowReads) in references {
            var referenceState = try await state(of: side, round, streamStart: streamStart)
            referenceState.merge(Self.windowState(windowReads, round)) { $1 }
            var coalescedState = coalescedState
            if round.variant == .halfWritten && name == "before coalescing" {
                // (a counter that does not read now also marks the basket, as disagreeing books do)
                coalescedState["basket"] = coalescedState["basket"]?.replacingOccurrences(
                    of: #"mismatch=\d+ "#, with: "", options: .regularExpression)
            }
            for field in Set(referenceState.keys).union(coalescedState.keys).sorted() where referenceState[field] != coalescedState[field] {
                report.differences.append(
                    "\(context), \(field): \(name) \(referenceState[field] ?? "nothing"), coalesced \(coalescedState[field] ?? "nothing")")
            }
        }
        if let corruptStore {
            _ = try await direct.send(
                setAside ? ["RENAME", .string(corruptStore + ":aside"), .string(corruptStore)] : ["DEL", .string(corruptStore)])
        }
    }

    /// The call as the script before coalescing took it (its own order of KEYS and ARGV).
    static func beforeCoalescing(_ call: ReserveCall) -> [RedisArgument] {
        let keys = call.keys
        let arguments = call.arguments
        // now: basket, consumerUnits, holds, stream, lostBaskets, partitionMarker, room, then
        // reservation, idempotency, rateLimit; before: basket, reservation, consumerUnits,
        // holds, stream, idempotency, rateLimit, lostBaskets, partitionMarker, room
        let beforeKeys = [keys[0], keys[7], keys[1], keys[2], keys[3], keys[8], keys[9], keys[4], keys[5], keys[6]]
        // now: basketId, attemptsPerSecond, idempotencySeconds, refusalSeconds, then consumerId,
        // quantity, reservationId, fingerprint, admissionExpires, admissionEpoch
        let beforeArguments = [
            arguments[0], arguments[4], arguments[5], arguments[6], arguments[1], arguments[7], arguments[2], arguments[3], arguments[8],
            arguments[9],
        ]
        return evalSHA(beforeScript, keys: beforeKeys, arguments: beforeArguments)
    }

    /// The script before coalescing, joined with today's prelude (which it shares: unchanged since).
    public static let beforeScript = RedisScript(
        name: "reserve-before-coalescing", source: ReservationScripts.joined(own: ReserveBeforeCoalescing.source, prelude: ReservationScripts.prelude)
    )

    /// The consumers a round names (0 and 1 have prepared records).
    static func consumers(_ round: Round) -> [Int] { Set(round.requests.map(\.consumer)).union([0, 1]).sorted() }

    static func evalSHA(_ script: RedisScript, keys: [String], arguments: [RedisArgument]) -> [RedisArgument] {
        ["EVALSHA", .string(script.sha1), .int(keys.count)] + keys.map { .string($0) } + arguments
    }

    /// `commands` in one MULTI on the partition's server: nothing runs between them.
    func execute(_ commands: [[RedisArgument]]) async throws -> [RedisValue] {
        let replies = try await direct.pipeline([["MULTI"]] + commands + [["EXEC"]])
        guard case .success(.array(let executed)) = replies.last, executed.count == commands.count else {
            throw HarnessError("MULTI/EXEC answered \(replies)")
        }
        return executed
    }

    /// The rate-limit windows as read in the MULTI: each consumer's count, and whether it is open.
    static func windowState(_ reads: ArraySlice<RedisValue>, _ round: Round) -> [String: String] {
        var state: [String: String] = [:]
        for (consumer, pair) in zip(consumers(round), stride(from: reads.startIndex, to: reads.endIndex, by: 2)) {
            let count = reads[pair].string ?? "none"
            let ttl = reads[pair + 1].int ?? -3
            state["rate window of consumer \(consumer)"] = "\(count), " + (ttl > 0 ? "open" : String(ttl))
        }
        return state
    }

    static func admission(_ kind: Admission, now: Int64) -> (expiresAtMilliseconds: Int64, epoch: String)? {
        switch kind {
        case .none: return nil
        case .valid: return (now + 3_600_000, "e1")
        case .expired: return (now - 3_600_000, "e1")
        case .otherRoom: return (now + 3_600_000, "e0")
        }
    }

    func redisMilliseconds() async throws -> Int64 {
        let time = try await direct.send("TIME")
        guard let parts = time.array, parts.count == 2, let seconds = parts[0].int, let micros = parts[1].int else {
            throw HarnessError("TIME answered \(time)")
        }
        return Int64(seconds) * 1000 + Int64(micros / 1000)
    }

    func lastStreamId() async throws -> String {
        let last = try await direct.send("XREVRANGE", .string(Keyspace.stream(partition)), "+", "-", "COUNT", "1")
        return last.array?.first?.array?.first?.string ?? "0-0"
    }

    /// The round's basket and prior state on one side.
    func prepare(_ side: Side, _ round: Round, now: Int64) async throws {
        let basket = Keyspace.basket(side.basketId, partition: partition)
        switch round.variant {
        case .missing: break
        case .missingAndLost:
            _ = try await direct.send("SADD", .string(Keyspace.lostBaskets(partition)), .string(side.basketId))
        default:
            let created = try await direct.run(
                CreateBasketCall(basketId: side.basketId, stock: round.stock, holdSeconds: 86_400, maxPerConsumer: round.maxPerConsumer))
            guard case .created = created else { throw HarnessError("basket \(side.basketId): \(created)") }
        }
        var fields: [RedisArgument] = []
        switch round.variant {
        case .room:
            fields = ["room_rate", "60", "room_secs", "300"]
            _ = try await direct.send("HSET", .string(Keyspace.room(basketId: side.basketId, partition: partition)), "epoch", "e1")
        case .closingLater: fields = ["closes", .string(String(now + 3_600_000))]
        case .booksBelowStock: fields = ["stock", .int(round.stock + 2)]
        case .booksAboveStock: fields = ["stock", .int(max(round.stock - 2, 0))]
        case .paused: fields = ["paused", "1"]
        case .notOpen: fields = ["opens", .string(String(now + 3_600_000))]
        case .closed: fields = ["closes", "1000"]
        case .repair: fields = ["maint", "repair-token"]
        case .unreadableWindow: fields = ["opens", "0x10"]
        case .halfWritten: _ = try await direct.send("HDEL", .string(basket), "pending")
        case .fractionalStock: fields = ["stock", "2.5"]
        // (mismatched books, so the mark is written)
        case .corruptMismatch: fields = ["mismatch", "x", "stock", .int(round.stock + 1)]
        // (books that disagree too: the mark stays written when the grant fails)
        case .corruptHolds, .corruptStream: fields = ["stock", .int(round.stock + 1)]
        case .corruptReservation:
            // every request's reservation key holds a string: each grant fails, whole
            for id in side.reservationIds {
                _ = try await direct.send("SET", .string(Keyspace.reservation(id, partition: partition)), "not a hash")
            }
        case .open, .missing, .missingAndLost: break
        }
        if !fields.isEmpty { _ = try await direct.send(["HSET", .string(basket)] + fields) }
        for (consumer, units) in round.heldBefore {
            _ = try await direct.send(
                "HSET", .string(Keyspace.consumerUnits(basketId: side.basketId, partition: partition)), .string(side.consumer(consumer)),
                .string(units))
        }
        if let legacy = round.legacyRecord {
            let fingerprint = ReservationRequest(consumerId: side.consumer(0), quantity: 1).fingerprint
            _ = try await direct.send(
                "HSET", .string(idempotencyKey(side, consumer: 0, key: 3)), "fp", .string(fingerprint), "answer", .string(legacy))
        }
        if round.wrongTypeRecord { _ = try await direct.send("SET", .string(idempotencyKey(side, consumer: 1, key: 2)), "not a hash") }
    }

    func idempotencyKey(_ side: Side, consumer: Int, key: Int) -> String {
        Keyspace.idempotency(basketId: side.basketId, consumerId: side.consumer(consumer), key: "key-\(key)", partition: partition)
    }

    /// A request's answer with the side's names replaced, and its kind.
    func describe(_ answer: Result<ReserveCall.Outcome, any Error>, index: Int, side: Side) -> (String, String) {
        switch answer {
        case .failure(let error):
            // the error's code (Redis's first word): a script's own error reply adds where it stopped
            if case RedisError.server(let message) = error { return ("failed: \(message.prefix { $0 != " " })", "failed") }
            return ("error: \(error)", "error")
        case .success(let outcome):
            switch outcome {
            case .granted(let id, _, let remaining):
                guard let granted = side.reservationIds.firstIndex(of: id) else {
                    return ("granted \(id), \(remaining) left", "granted (legacy replay)")
                }
                return ("granted #\(granted), \(remaining) left", granted == index ? "granted" : "granted (replay)")
            case .rateLimited: return ("rate_limited", "rate_limited")
            case .saleNotOpen(let opens, _): return ("sale_not_open at \(opens)", "sale_not_open")
            case .soldOutClosingIn: return ("sold_out (closing)", "sold_out (closing)")
            case .soldOutReplayed: return ("sold_out (replay)", "sold_out (replay)")
            case .soldOut: return ("sold_out", "sold_out")
            case .limitExceeded: return ("limit_exceeded", "limit_exceeded")
            case .basketNotFound: return ("basket_not_found", "basket_not_found")
            case .unavailable: return ("unavailable", "unavailable")
            case .idempotencyKeyReused: return ("idempotency_key_reused", "idempotency_key_reused")
            case .salePaused: return ("sale_paused", "sale_paused")
            case .saleClosed: return ("sale_closed", "sale_closed")
            case .admissionRequired: return ("admission_required", "admission_required")
            }
        }
    }

    /// Everything the round may have stored on one side, by name, with the side's names replaced.
    func state(of side: Side, _ round: Round, streamStart: String) async throws -> [String: String] {
        func normalized(_ text: String) -> String {
            if let index = side.reservationIds.firstIndex(of: text) { return "#\(index)" }
            return text.replacingOccurrences(of: side.basketId, with: "<basket>").replacingOccurrences(of: side.consumerPrefix, with: "<consumer>")
        }
        func pairs(_ value: RedisValue, dropping dropped: Set<String> = []) -> String {
            let items = (value.array ?? []).map { $0.string ?? "\($0)" }
            var fields: [String] = []
            var index = 0
            while index + 1 < items.count {
                if !dropped.contains(items[index]) { fields.append("\(normalized(items[index]))=\(normalized(items[index + 1]))") }
                index += 2
            }
            return fields.sorted().joined(separator: " ")
        }
        var names: [String] = []
        var commands: [[RedisArgument]] = []
        func read(_ name: String, _ command: [RedisArgument]) {
            names.append(name)
            commands.append(command)
        }
        read("basket", ["HGETALL", .string(Keyspace.basket(side.basketId, partition: partition))])
        read("consumer units", ["HGETALL", .string(Keyspace.consumerUnits(basketId: side.basketId, partition: partition))])
        for (index, id) in side.reservationIds.enumerated() {
            read("reservation #\(index)", ["HGETALL", .string(Keyspace.reservation(id, partition: partition))])
            read("hold #\(index)", ["ZSCORE", .string(Keyspace.holds(partition)), .string(id)])
        }
        for consumer in Self.consumers(round) {
            for key in 0...3 {
                let record = idempotencyKey(side, consumer: consumer, key: key)
                read("key \(key) of consumer \(consumer): type", ["TYPE", .string(record)])
                read("key \(key) of consumer \(consumer)", ["HGETALL", .string(record)])
                read("key \(key) of consumer \(consumer): ttl", ["TTL", .string(record)])
            }
        }
        read("events", ["XRANGE", .string(Keyspace.stream(partition)), .string("(" + streamStart), "+"])
        let replies = try await direct.pipeline(commands)
        var state: [String: String] = [:]
        for (name, reply) in zip(names, replies) {
            let value: RedisValue
            switch reply {
            case .success(let success): value = success
            case .failure(let error): value = .error("\(error)")
            }
            switch name {
            case "events":
                // this side's events, in order, without their expiry
                state[name] = (value.array ?? []).compactMap { entry -> String? in
                    guard let fields = entry.array?.last, (fields.array ?? []).contains(where: { $0.string == side.basketId }) else { return nil }
                    return pairs(fields, dropping: ["exp", "at"])
                }.joined(separator: " | ")
            case _ where name.hasPrefix("reservation"):
                state[name] = pairs(value, dropping: ["exp"])
            case _ where name.hasPrefix("hold"):
                state[name] = value.isNull ? "none" : "held"
            case _ where name.hasSuffix(": ttl"):
                // retention, not the instant it was read: none, a refusal's minutes or a grant's day
                let ttl = value.int ?? -3
                state[name] = ttl < 0 ? String(ttl) : ttl <= 300 ? "refusal window" : "day"
            case _ where name.hasSuffix(": type"):
                state[name] = value.string ?? "\(value)"
            case _ where name.hasPrefix("key"):
                state[name] = value.array == nil ? "\(value)" : pairs(value, dropping: ["exp"])
            default:
                state[name] = pairs(value, dropping: ["created"])
            }
        }
        return state
    }
}
