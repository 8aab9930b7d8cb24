import Foundation
import NIOCore
import NIOHTTP1
import ReconcilerCore
import RedisClient
import ReservationCore
import Testing

@testable import GatewayCore
@testable import HTTPServing

/// Pure functions: no servers involved.
@Suite("Unit")
struct UnitTests {
    @Test("the Authorization header: none, one, or several (any case, empty or comma values count), never a first-match")
    func authorizationHeader() {
        func found(_ headers: [(String, String)]) -> String {
            let request = HTTPRequest(method: .GET, uri: "/", headers: HTTPHeaders(headers), body: nil)
            switch RequestDecoder.authorization(request) {
            case .none: return "none"
            case .one(let value): return "one:\(value)"
            case .several: return "several"
            }
        }
        #expect(found([]) == "none")
        #expect(found([("Host", "x"), ("X-Authorization", "Bearer t"), ("Authorizatio", "Bearer t")]) == "none")
        #expect(found([("Authorization", "Bearer t")]) == "one:Bearer t")
        #expect(found([("aUTHORIZATION", "Bearer t")]) == "one:Bearer t")
        #expect(found([("Authorization", "")]) == "one:")
        #expect(found([("Authorization", "Bearer a"), ("authorization", "Bearer b")]) == "several")
        #expect(found([("Authorization", "Bearer a"), ("Authorization", "")]) == "several")
        #expect(found([("Authorization", "Bearer a"), ("Host", "x"), ("AUTHORIZATION", ",")]) == "several")
        // 13 bytes that are not the name, letters only in their two cases.
        #expect(found([("Authorizati0n", "Bearer t"), ("Authorization\u{0}", "Bearer t"), ("Authorizatio\u{0E}", "x")]) == "none")
    }

    @Test(
        "JSON parsing accepts RFC 8259 and nothing else",
        arguments: [
            (#"{"a":1,"b":[true,false,null],"c":"x\"\\\/\u00e9\ud83d\ude00","d":-0.5e3}"#, true),
            (#"  {"nested":{"deep":[{"x":1}]}}  "#, true),
            (#"{"a":1,}"#, false), (#"{'a':1}"#, false), (#"{"a":01}"#, false), (#"{"a":1} x"#, false),
            (#"{"a":"\x"}"#, false), (#"{"a":"\ud83d"}"#, false), ("{\"a\":\"tab\there\"}", false), (#"[1,2"#, false), ("", false),
        ])
    func jsonParsing(text: String, valid: Bool) {
        let parsed = try? JSONValue.parse(Array(text.utf8))
        #expect((parsed != nil) == valid, "\(text)")
    }

    @Test("JSON values decode to the right types")
    func jsonValues() throws {
        let value = try JSONValue.parse(Array(#"{"n":42,"f":1.5,"s":"é😀","big":123456789012}"#.utf8))
        #expect(value["n"] == .integer(42))
        #expect(value["f"] == .number(1.5))
        #expect(value["s"]?.stringValue == "é😀")
        #expect(value["big"]?.integerValue == 123_456_789_012)
    }

    @Test(
        "ids follow the contract's format",
        arguments: [
            ("basket-1", true), ("A.b_c:d@e-F", true), (String(repeating: "x", count: 128), true),
            ("", false), (String(repeating: "x", count: 129), false), ("has space", false), ("slash/no", false), ("é", false),
        ])
    func identifiers(id: String, valid: Bool) {
        #expect(Identifier.isValid(id) == valid)
    }

    @Test("reservation ids name their partition and are unique")
    func reservationIds() {
        let generator = ReservationIdGenerator()
        let other = ReservationIdGenerator()
        var seen = Set<String>()
        for partition in 0..<Keyspace.partitionCount {
            for _ in 0..<100 {
                let id = generator.next(partition: partition)
                #expect(ReservationIdGenerator.partition(of: id) == partition)
                #expect(Identifier.isValid(id))
                #expect(seen.insert(id).inserted)
                #expect(seen.insert(other.next(partition: partition)).inserted)
            }
        }
        #expect(ReservationIdGenerator.partition(of: "99-x") == nil)
        #expect(ReservationIdGenerator.partition(of: "ab-x") == nil)
    }

    @Test("every key of a basket shares one hash tag")
    func hashTags() {
        let basket = "sneakers-42"
        let partition = Keyspace.partition(ofBasket: basket)
        let keys = [
            Keyspace.basket(basket, partition: partition), Keyspace.stream(partition), Keyspace.holds(partition),
            Keyspace.consumerUnits(basketId: basket, partition: partition),
            Keyspace.idempotency(basketId: basket, consumerId: "c", key: "k", partition: partition),
        ]
        let tags = Set(keys.map { key in key[key.index(after: key.firstIndex(of: "{")!)..<key.firstIndex(of: "}")!] })
        #expect(tags.count == 1)
        #expect(Keyspace.partition(ofBasket: basket) == partition, "stable across calls")
    }

    @Test("webhook signatures: valid, tampered, stale, rotated secrets")
    func webhookSignatures() {
        let verifier = WebhookVerifier(secret: "s3cret")
        let body = Array(#"{"id":"e"}"#.utf8)
        let header = verifier.signatureHeader(body: body, timestamp: 1_000_000)
        #expect(verifier.isValid(signatureHeader: header, body: body, now: 1_000_000))
        #expect(verifier.isValid(signatureHeader: header, body: body, now: 1_000_300))
        #expect(!verifier.isValid(signatureHeader: header, body: body, now: 1_000_301))
        #expect(!verifier.isValid(signatureHeader: header, body: body + [32], now: 1_000_000))
        #expect(!WebhookVerifier(secret: "other").isValid(signatureHeader: header, body: body, now: 1_000_000))
        let rotated = "t=1000000,v1=" + String(repeating: "0", count: 64) + "," + header.split(separator: ",")[1]
        #expect(verifier.isValid(signatureHeader: rotated, body: body, now: 1_000_000))
        #expect(!verifier.isValid(signatureHeader: nil, body: body, now: 1_000_000))
        #expect(verifier.isValid(signatureHeader: header, body: body, now: 999_700), "300 s early is still within tolerance")
        #expect(!verifier.isValid(signatureHeader: header, body: body, now: 999_699))
    }

    @Test(
        "webhook timestamps that would overflow are refused, never trap",
        arguments: [
            "-9223372036854775808", "9223372036854775807", "-1", "+1000000", "99999999999999999999", "", "1e6", " 1000000", "0x10",
        ])
    func webhookHostileTimestamps(timestamp: String) {
        let verifier = WebhookVerifier(secret: "s3cret")
        let body = Array(#"{"id":"e"}"#.utf8)
        let mac = verifier.signatureHeader(body: body, timestamp: 1_000_000).split(separator: ",")[1]
        for now in [Int64.min, -1, 0, 1_000_000, Int64.max] {
            #expect(!verifier.isValid(signatureHeader: "t=\(timestamp),\(mac)", body: body, now: now))
        }
        #expect(!WebhookVerifier.isWithin(300, .min, of: .max))
        #expect(!WebhookVerifier.isWithin(300, .max, of: .min))
        #expect(WebhookVerifier.isWithin(300, .max, of: .max))
    }

    @Test("RFC 3339 formatting in UTC with milliseconds")
    func rfc3339() {
        #expect(RFC3339.format(milliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(RFC3339.format(milliseconds: 1_795_968_054_123) == "2026-11-29T16:00:54.123Z")
        #expect(RFC3339.format(milliseconds: 951_782_400_000) == "2000-02-29T00:00:00.000Z")
        #expect(RFC3339.format(milliseconds: -1) == "1969-12-31T23:59:59.999Z")
        // Never a trap, whatever a stored expiry says: four-digit years, 24 characters.
        for extreme in [Int64.min, Int64.min + 999, Int64.max] { #expect(RFC3339.format(milliseconds: extreme).utf8.count == 24) }
    }

    @Test("a prepared answer's wire form is the encoding it stands for, used only where it fits, dropped on any change")
    func preparedWireForm() {
        let allocator = ByteBufferAllocator()
        let plain = HTTPResponse(status: .conflict, body: Array(#"{"error":"sold_out"}"#.utf8))
        let prepared = plain.prepared()
        func text(_ response: HTTPResponse, _ version: HTTPVersion, keepAlive: Bool = true, withBody: Bool = true) -> String {
            String(buffer: response.wire(version: version, keepAlive: keepAlive, withBody: withBody, allocator: allocator))
        }
        #expect(prepared.wireForm != nil && plain.wireForm == nil)
        for version in [HTTPVersion.http1_1, .http1_0] {
            for keepAlive in [true, false] {
                for withBody in [true, false] {
                    #expect(
                        text(prepared, version, keepAlive: keepAlive, withBody: withBody)
                            == text(plain, version, keepAlive: keepAlive, withBody: withBody))
                }
            }
        }
        #expect(text(prepared, .http1_1).hasPrefix("HTTP/1.1 409 Conflict\r\n"))
        #expect(text(prepared, .http1_0, keepAlive: false).contains("connection: close"))
        var changed = prepared
        changed.extraHeaders.append(("Retry-After", "1"))
        #expect(changed.wireForm == nil)
        #expect(text(changed, .http1_1).contains("Retry-After: 1"))
    }

    @Test("JSON writer: integers written in place, null, escapes")
    func jsonWriter() {
        var writer = JSONWriter()
        writer.field("zero", 0)
        writer.field("negative", -42)
        writer.field("min", Int.min)
        writer.field("max", Int.max)
        writer.field("none", nil as String?)
        writer.field("text", "a\"b\n")
        #expect(
            String(decoding: writer.finish(), as: UTF8.self)
                == #"{"zero":0,"negative":-42,"min":-9223372036854775808,"max":9223372036854775807,"none":null,"text":"a\"b\n"}"#)
    }

    @Test("configuration: defaults, variables, and clear errors")
    func configuration() throws {
        let defaults = try GatewayConfiguration(environment: [:])
        #expect(defaults.redisURL == "redis://127.0.0.1:6379")
        #expect(defaults.port == 8080)
        #expect(defaults.holdSeconds == 600)
        #expect(defaults.reserveRateLimit == 20)
        let custom = try GatewayConfiguration(environment: ["GATEWAY_PORT": "9000", "HOLD_SECONDS": "30", "RESERVE_RATE_LIMIT": "0"])
        #expect(custom.port == 9000 && custom.holdSeconds == 30 && custom.reserveRateLimit == 0)
        #expect(defaults.redisBatchDelayMicroseconds == 0)
        let delayed = try GatewayConfiguration(environment: ["REDIS_BATCH_DELAY_US": "300"])
        #expect(try RedisConfiguration(gateway: delayed).batchDelay == .microseconds(300))
        #expect(throws: ConfigurationProblem.invalid(variable: "REDIS_BATCH_DELAY_US", reason: "expected an integer in 0...100000")) {
            try GatewayConfiguration(environment: ["REDIS_BATCH_DELAY_US": "100001"])
        }
        // REDIS_WAIT_REPLICAS: off by default; the WAIT's timeout must stay below the batch timer.
        #expect(defaults.redisWaitReplicas == 0 && defaults.redisWaitTimeoutMilliseconds == 200)
        #expect(try RedisConfiguration(gateway: defaults).waitReplicas == 0)
        let waiting = try GatewayConfiguration(environment: ["REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "150"])
        let waitingRedis = try RedisConfiguration(gateway: waiting)
        #expect(waitingRedis.waitReplicas == 1 && waitingRedis.waitTimeout == .milliseconds(150))
        #expect(throws: ConfigurationProblem.invalid(variable: "REDIS_WAIT_TIMEOUT_MS", reason: "must be below REDIS_COMMAND_TIMEOUT_MS")) {
            try GatewayConfiguration(environment: ["REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "5000"])
        }
        #expect(throws: ConfigurationProblem.invalid(variable: "REDIS_WAIT_REPLICAS", reason: "expected an integer in 0...64")) {
            try GatewayConfiguration(environment: ["REDIS_WAIT_REPLICAS": "-1"])
        }
        #expect(throws: ConfigurationProblem.invalid(variable: "HOLD_SECONDS", reason: "expected an integer in 1...86400")) {
            try GatewayConfiguration(environment: ["HOLD_SECONDS": "0"])
        }
        var missing = try GatewayConfiguration(environment: [:])
        #expect(throws: ConfigurationProblem.missing(variable: "ADMIN_TOKEN")) { try missing.resolveSecrets() }
        missing.developmentMode = true
        try missing.resolveSecrets()
        #expect(missing.adminToken == GatewayConfiguration.developmentAdminToken)
        // The core is shared: both executables read REDIS_URL, GATEWAY_HOST and LOG_LEVEL alike.
        let shared = ["REDIS_URL": "redis://10.0.0.1:7000", "LOG_LEVEL": "debug", "HOLD_SECONDS": "0"]
        #expect(throws: ConfigurationProblem.self) { try GatewayConfiguration(environment: shared) }
        let reconciler = try ReconcilerConfiguration(environment: shared)
        #expect(reconciler.redisURL == "redis://10.0.0.1:7000" && reconciler.logLevel == "debug", "the gateway's options are not the reconciler's")
        #expect(reconciler.databaseURL == "postgres://postgres@127.0.0.1:5432/reservations")
        #expect(throws: ConfigurationProblem.invalid(variable: "RECONCILER_BATCH", reason: "expected an integer in 1...100000")) {
            try ReconcilerConfiguration(environment: ["RECONCILER_BATCH": "0"])
        }
    }

    @Test("routing: every endpoint, 404 for other paths, 405 with what the path allows")
    func routing() {
        #expect(Router.route(method: .PUT, target: "/v1/baskets/b-1") == .success(.createBasket(basketId: "b-1")))
        #expect(Router.route(method: .GET, target: "/v1/baskets/b-1?x=1") == .success(.getBasket(basketId: "b-1")))
        #expect(Router.route(method: .POST, target: "/v1/baskets/b/reservations") == .success(.reserve(basketId: "b")))
        #expect(Router.route(method: .POST, target: "/v1/baskets/b/stock-adjustments") == .success(.adjustStock(basketId: "b")))
        #expect(Router.route(method: .DELETE, target: "/v1/reservations/r") == .success(.cancelReservation(reservationId: "r")))
        #expect(Router.route(method: .POST, target: "/v1/webhooks/payments") == .success(.webhook))
        #expect(Router.route(method: .GET, target: "/openapi.yaml") == .success(.openapi))
        #expect(Router.route(method: .POST, target: "/healthz") == .failure(.methodNotAllowed(allowed: "GET, HEAD")))
        #expect(Router.route(method: .PATCH, target: "/v1/baskets/b") == .success(.updateBasket(basketId: "b")))
        #expect(Router.route(method: .POST, target: "/v1/baskets/b") == .failure(.methodNotAllowed(allowed: "GET, HEAD, PUT, PATCH")))
        for target in [
            "", "*", "http://x/v1/baskets/b", "/v1/baskets/b/reservations/x", "/v1/baskets/b/other", "/v2/baskets/b",
            "/" + String(repeating: "a/", count: 600), "/v1/webhooks/other",
        ] {
            #expect(Router.route(method: .GET, target: target) == .failure(.notFound), "\(target)")
        }
    }

    @Test(
        "path ids are percent-decoded before their format is checked",
        arguments: [
            ("/v1/reservations/00-a%3Ab", "00-a:b"), ("/v1/reservations/a%40b", "a@b"), ("/v1/reservations/%41", "A"),
            ("/v1/reservations/a%2", "a%2"), ("/v1/reservations/a%zz", "a%zz"), ("/v1/reservations/%", "%"),
            ("/v1/reservations/a%2Fb", "a/b"), ("/v1/reservations/%00", "\u{0}"), ("/v1/reservations/%FF", "\u{FFFD}"),
        ])
    func percentDecoding(target: String, id: String) {
        #expect(Router.route(method: .GET, target: target) == .success(.getReservation(reservationId: id)))
    }

    @Test("JSON integers: integral numbers in any notation count, fractions and huge floats do not")
    func jsonIntegers() throws {
        let cases: [(String, Int64?)] = [
            ("2", 2), ("2.0", 2), ("2e0", 2), ("-0", 0), ("1e9", 1_000_000_000), ("2.5", nil), ("1e400", nil),
            ("9223372036854775807", .max), ("9223372036854775808", nil), ("1e300", nil), ("-1e-400", 0),
        ]
        for (text, expected) in cases {
            #expect(try JSONValue.parse(Array(text.utf8)).integerValue == expected, "\(text)")
        }
    }

    @Test("reservation ids: 128 random bits after the partition, nothing predictable from the previous one")
    func unguessableIds() {
        let generator = ReservationIdGenerator()
        var seen = Set<String>()
        var perPosition = [Set<UInt8>](repeating: [], count: 29)
        var sameAsPrevious = 0
        var previous: [UInt8]?
        for _ in 0..<10_000 {
            let id = generator.next(partition: 7)
            let bytes = Array(id.utf8)
            #expect(bytes.count == 29 && id.hasPrefix("07-"))
            #expect(seen.insert(id).inserted)
            for (index, byte) in bytes.enumerated() { perPosition[index].insert(byte) }
            if let previous { sameAsPrevious += zip(previous.dropFirst(3), bytes.dropFirst(3)).filter { $0 == $1 }.count }
            previous = bytes
        }
        // Every random position takes every value it can (the first carries 3 bits, the rest 5).
        #expect(perPosition[3].count == 8)
        for index in 4..<29 { #expect(perPosition[index].count == 32, "position \(index)") }
        // Consecutive ids agree on 26/32 = 0.8 positions on average by chance; a counter or a shared
        // per-process part would make it far more.
        #expect(Double(sameAsPrevious) / 9_999 < 1.5)
    }

    @Test("the sold-out memory refuses only what Redis would refuse: q or more after a refusal of q")
    func soldOutByQuantity() {
        let cache = SoldOutCache(milliseconds: 60_000)
        cache.markSoldOut("b", quantity: 2, ifUnchangedSince: cache.generation)
        #expect(cache.check("b", quantity: 2) == .soldOut)
        #expect(cache.check("b", quantity: 5) == .soldOut)
        #expect(cache.check("b", quantity: 1) != .soldOut, "one unit may be left: ask Redis")
        cache.markSoldOut("b", quantity: 5, ifUnchangedSince: cache.generation)
        #expect(cache.check("b", quantity: 1) != .soldOut, "a larger refusal does not widen the smaller one")
        cache.markSoldOut("b", quantity: 1, ifUnchangedSince: cache.generation)
        #expect(cache.check("b", quantity: 1) == .soldOut)
        let stale = cache.generation
        cache.clear("b")
        #expect(cache.check("b", quantity: 1) != .soldOut)
        cache.markSoldOut("b", quantity: 1, ifUnchangedSince: stale)
        #expect(cache.check("b", quantity: 1) != .soldOut, "a refusal older than a release is not remembered")
        #expect(SoldOutCache(milliseconds: 0).check("b", quantity: 1) == .ask)
    }

    @Test("a sold-out entry that runs out is renewed by one request while the others are still refused, until its answer (or the backstop)")
    func soldOutRefresh() {
        let ms: Int64 = 1_000_000
        let cache = SoldOutCache(milliseconds: 50, refreshLimitMilliseconds: 1_000)
        cache.markSoldOut("b", quantity: 1, ifUnchangedSince: cache.generation, now: 0)
        #expect(cache.check("b", quantity: 1, now: 49 * ms) == .soldOut)
        // Ran out: the first request asks Redis, the rest are refused meanwhile.
        #expect(cache.check("b", quantity: 1, now: 50 * ms) == .refresh)
        #expect(cache.check("b", quantity: 1, now: 51 * ms) == .soldOut)
        #expect(cache.check("b", quantity: 3, now: 51 * ms) == .soldOut)
        // Redis refused again: a fresh entry, the next run-out refreshes again.
        cache.markSoldOut("b", quantity: 1, ifUnchangedSince: cache.generation, now: 52 * ms)
        #expect(cache.check("b", quantity: 1, now: 101 * ms) == .soldOut)
        #expect(cache.check("b", quantity: 1, now: 102 * ms) == .refresh)
        // The refresh found units (or no answer): the entry ends, everyone asks Redis.
        cache.endRefresh("b")
        #expect(cache.check("b", quantity: 1, now: 103 * ms) == .ask)
        #expect(cache.check("b", quantity: 1, now: 104 * ms) == .ask)

        // A slow refresh keeps the others refused (Redis would make them wait just as long); one
        // that never reports back keeps the entry until the backstop at most.
        cache.markSoldOut("c", quantity: 1, ifUnchangedSince: cache.generation, now: 0)
        #expect(cache.check("c", quantity: 1, now: 60 * ms) == .refresh)
        #expect(cache.check("c", quantity: 1, now: 500 * ms) == .soldOut)
        #expect(cache.check("c", quantity: 1, now: 1_059 * ms) == .soldOut)
        #expect(cache.check("c", quantity: 1, now: 1_060 * ms) == .ask)
        #expect(cache.check("c", quantity: 1, now: 1_061 * ms) == .ask)

        // A release during a refresh ends it; a refusal that left before the release is not kept.
        cache.markSoldOut("d", quantity: 1, ifUnchangedSince: cache.generation, now: 0)
        let before = cache.generation
        #expect(cache.check("d", quantity: 1, now: 60 * ms) == .refresh)
        cache.clear("other")
        #expect(!cache.markSoldOut("d", quantity: 1, ifUnchangedSince: before, now: 61 * ms))
        #expect(cache.check("d", quantity: 1, now: 62 * ms) == .ask)
        // A smaller quantity than the refusal is never refused, refreshing or not.
        cache.markSoldOut("e", quantity: 2, ifUnchangedSince: cache.generation, now: 0)
        #expect(cache.check("e", quantity: 1, now: 60 * ms) == .ask)
        #expect(cache.check("e", quantity: 2, now: 60 * ms) == .refresh)
        #expect(cache.check("e", quantity: 1, now: 61 * ms) == .ask)
    }

    @Test("docs/openapi.yaml describes every field a reservation request and a view carry")
    func documentCoversTheModel() throws {
        let document = String(decoding: GatewayAPI.openAPIDocument.body, as: UTF8.self)
        func properties(_ schema: String) -> Set<String> {
            guard let start = document.range(of: "    \(schema):\n") else { return [] }
            var names: Set<String> = []
            var inProperties = false
            for line in document[start.upperBound...].split(separator: "\n", omittingEmptySubsequences: false) {
                if !line.hasPrefix("      ") { break }
                if line == "      properties:" {
                    inProperties = true
                } else if inProperties, line.hasPrefix("        "), !line.hasPrefix("         "), let name = line.split(separator: ":").first {
                    names.insert(name.trimmingCharacters(in: .whitespaces))
                }
            }
            return names
        }
        // Every field a reservation request is compared on is a field of its JSON body.
        #expect(Set(ReservationRequest.Field.allCases.map(\.rawValue)).isSubset(of: properties("ReserveRequest")))
        let record = ReservationRecord(
            basketId: "b", consumerId: "c", quantity: 1, status: .confirmed, expiresAtMilliseconds: 1000, paymentId: "p")
        let reservation = try #require(try JSONSerialization.jsonObject(with: Data(record.json(reservationId: "00-r"))) as? [String: Any])
        #expect(Set(reservation.keys).isSubset(of: properties("ReservationView")))
        var state = BasketState(
            stock: 1, pending: 0, confirmed: 0, capacity: 1,
            settings: BasketSettings(holdSeconds: 60, maxPerConsumer: 1, opensAtMilliseconds: 5, closesAtMilliseconds: 9, paused: true))
        state.observedAtMilliseconds = 7
        let basket = try #require(try JSONSerialization.jsonObject(with: Data(state.json(basketId: "b"))) as? [String: Any])
        #expect(Set(basket.keys).isSubset(of: properties("Basket")), "\(Set(basket.keys).subtracting(properties("Basket")).sorted())")
        #expect(basket["state"] as? String == "paused")
    }

    @Test("the sold-out memory never outlives a sale's closing time, refresh or not")
    func soldOutMemoryEndsAtClose() {
        let cache = SoldOutCache(milliseconds: 60_000)
        let start: Int64 = 1_000_000_000
        #expect(cache.markSoldOut("b", quantity: 1, ifUnchangedSince: cache.generation, closesInMilliseconds: 5, now: start))
        #expect(cache.check("b", quantity: 1, now: start + 4_000_000) == .soldOut)
        #expect(cache.check("b", quantity: 1, now: start + 5_000_000) == .ask, "closed: the script answers sale_closed")
        #expect(cache.check("b", quantity: 1, now: start + 6_000_000) == .ask)
    }

    @Test("consumer identity is secure by default: no key refuses to start unless CONSUMER_AUTH=trusted or --dev; a key means token mode")
    func consumerAuthDefaults() throws {
        let secrets = ["ADMIN_TOKEN": "a", "WEBHOOK_SECRET": "w", "ADMISSION_SECRET": "s"]
        var noAdmission = try GatewayConfiguration(environment: ["ADMIN_TOKEN": "a", "WEBHOOK_SECRET": "w", "CONSUMER_AUTH": "trusted"])
        #expect(throws: ConfigurationProblem.missing(variable: "ADMISSION_SECRET")) { try noAdmission.resolveSecrets() }
        var none = try GatewayConfiguration(environment: secrets)
        #expect(throws: ConfigurationProblem.self) { try none.resolveSecrets() }
        var trusted = try GatewayConfiguration(environment: secrets.merging(["CONSUMER_AUTH": "trusted"]) { $1 })
        try trusted.resolveSecrets()
        #expect(trusted.consumerAuth == .trusted)
        var dev = GatewayConfiguration()
        dev.developmentMode = true
        try dev.resolveSecrets()
        #expect(dev.consumerAuth == .trusted)
        let key = "k1:" + String(repeating: "A", count: 43)
        var keyed = try GatewayConfiguration(environment: secrets.merging(["CONSUMER_TOKEN_KEYS": key]) { $1 })
        try keyed.resolveSecrets()
        #expect(keyed.consumerAuth == .token)
        guard case .token = try keyed.consumerAuthentication() else {
            Issue.record("token mode")
            return
        }
        var trustedWithKeys = try GatewayConfiguration(environment: secrets.merging(["CONSUMER_AUTH": "trusted", "CONSUMER_TOKEN_KEYS": key]) { $1 })
        #expect(throws: ConfigurationProblem.self, "keys set but the body believed") { try trustedWithKeys.resolveSecrets() }
        var tokenWithout = try GatewayConfiguration(environment: secrets.merging(["CONSUMER_AUTH": "token"]) { $1 })
        #expect(throws: ConfigurationProblem.self) { try tokenWithout.resolveSecrets() }
        #expect(throws: ConfigurationProblem.self) { try GatewayConfiguration(environment: ["CONSUMER_AUTH": "maybe"]) }
        var shortKey = try GatewayConfiguration(environment: secrets.merging(["CONSUMER_TOKEN_KEYS": "k1:AAAA"]) { $1 })
        try shortKey.resolveSecrets()
        #expect(throws: ConfigurationProblem.self) { try shortKey.consumerAuthentication() }
        var missingFile = try GatewayConfiguration(environment: secrets.merging(["CONSUMER_TOKEN_JWKS": "/nonexistent/jwks.json"]) { $1 })
        try missingFile.resolveSecrets()
        #expect(throws: ConfigurationProblem.self) { try missingFile.consumerAuthentication() }
    }

    @Test("RFC 3339 parsing: 0 to 9 fraction digits, offsets, leap days; anything else or outside 1970-9999 is nil, never a trap")
    func rfc3339Parsing() {
        #expect(RFC3339.parse("2026-12-24T10:00:00Z") == 1_798_106_400_000)
        for (fraction, millis) in [("", 0), (".1", 100), (".12", 120), (".123", 123), (".1234", 123), (".123456", 123), (".123456789", 123)]
            as [(String, Int64)]
        {
            #expect(RFC3339.parse("2026-12-24T10:00:00\(fraction)Z") == 1_798_106_400_000 + millis, "\(fraction)")
        }
        #expect(RFC3339.parse("2026-12-24T11:00:00+01:00") == 1_798_106_400_000)
        #expect(RFC3339.parse("2026-12-24t09:30:00-00:30") == 1_798_106_400_000)
        #expect(RFC3339.parse("2028-02-29T00:00:00Z") != nil)
        for bad in [
            "2027-02-29T00:00:00Z", "2026-12-24T10:00:00.1234567890Z", "2026-12-24T10:00:00.Z", "2026-12-24T24:00:00Z",
            "1969-12-31T23:59:59Z", "1970-01-01T00:00:00+00:01", "9999-12-31T23:59:59-23:59", "2026-12-24T10:00:00", "2026-12-24 10:00:00Z",
            "+2026-12-24T10:00:00Z", "2026-12-24T10:00:00ZZ", "", "x",
        ] {
            #expect(RFC3339.parse(bad) == nil, "\(bad)")
        }
        #expect(RFC3339.parse("9999-12-31T23:59:59.999Z") == 253_402_300_799_999)
    }
}
