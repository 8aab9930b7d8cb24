import ConsumerTokens
import Crypto
import Foundation
import GatewayCore
import NIOHTTP1
import ReservationCore
import TestSupport
import Testing

/// `CONSUMER_AUTH=token` end to end over HTTP: the consumer is the token's `sub`, a reservation is
/// read and cancelled only by its consumer (or the admin), an Idempotency-Key belongs to one
/// consumer. Every refusal of the token format itself is in ConsumerTokensTests; here, that they
/// reach the API as 401 `invalid_token` and change nothing.
@Suite("Consumer token mode")
struct ConsumerTokenModeTests {
    static let secret: [UInt8] = Array(repeating: 7, count: 32)
    static let keys = "shop-1:" + ConsumerTokenMinter.base64url(secret)
    /// A fixed P-256 key (its raw bytes: the key type is not Sendable).
    static let esKeyBytes: [UInt8] = Array(repeating: 3, count: 31) + [9]
    static var esKey: P256.Signing.PrivateKey { try! P256.Signing.PrivateKey(rawRepresentation: esKeyBytes) }

    static func start() async throws -> GatewayHarness {
        let jwks = FileManager.default.temporaryDirectory.appendingPathComponent(TestEnvironment.uniqueId("jwks") + ".json")
        try ConsumerTokenMinter.jwks([(kid: "idp-1", key: esKey.publicKey)]).write(to: jwks, atomically: true, encoding: .utf8)
        return try await GatewayHarness.start {
            $0.consumerAuth = .token
            $0.consumerTokenKeys = keys
            $0.consumerTokenJWKSPath = jwks.path
        }
    }

    static func token(_ sub: String, expiresIn: Int64 = 600) throws -> String {
        let keys = try ConsumerTokenKeys(hs256: Self.keys, jwksJSON: nil)
        return try ConsumerTokenMinter(keys: keys).mint(kid: "shop-1", sub: sub, expiresIn: expiresIn, now: WallClock.nowSeconds())
    }

    static func bearer(_ token: String) -> [(String, String)] { [("Authorization", "Bearer \(token)")] }

    static func reserve(_ gateway: GatewayHarness, _ basketId: String, token: String?, body: [String: JSONValueLiteral] = [:], key: String? = nil)
        async throws -> TestHTTPResponse
    {
        var headers = token.map(bearer) ?? []
        if let key { headers.append(("Idempotency-Key", key)) }
        return try await gateway.request(.POST, "/v1/baskets/\(basketId)/reservations", headers: headers, body: HTTPTestClient.json(body))
    }

    @Test("the consumer is the token's sub: no token, a forged, unsigned or expired one is 401 with WWW-Authenticate; another consumerId is 403")
    func reserveNeedsAToken() async throws {
        let gateway = try await Self.start()
        let basketId = TestEnvironment.uniqueId("tok")
        try await gateway.createBasket(basketId, stock: 5, maxPerConsumer: 5)
        let now = WallClock.nowSeconds()
        let unsigned =
            ConsumerTokenMinter.base64url(#"{"alg":"none","kid":"shop-1"}"#.utf8) + "."
            + ConsumerTokenMinter.base64url(#"{"sub":"mallory","exp":\#(now + 600)}"#.utf8) + "."
        let forged = ConsumerTokenMinter.sign(
            header: #"{"alg":"HS256","kid":"shop-1"}"#, payload: #"{"sub":"mallory","exp":\#(now + 600)}"#,
            hs256Secret: SymmetricKey(data: Array(repeating: UInt8(8), count: 32)))
        for token in [
            nil, "", unsigned, forged, try Self.token("mallory", expiresIn: 1).replacingOccurrences(of: ".", with: ".x"), GatewayHarness.adminToken,
        ] as [String?] {
            let refused = try await Self.reserve(gateway, basketId, token: token, body: ["consumerId": "mallory"])
            ContractErrorTests.expectError(refused, 401, "invalid_token")
            #expect(refused.headers.first(name: "www-authenticate") == "Bearer")
        }
        let expired = ConsumerTokenMinter.sign(
            header: #"{"alg":"HS256","kid":"shop-1"}"#, payload: #"{"sub":"late","exp":\#(now - 120)}"#, hs256Secret: SymmetricKey(data: Self.secret))
        ContractErrorTests.expectError(try await Self.reserve(gateway, basketId, token: expired), 401, "invalid_token")
        #expect(try await gateway.basket(basketId)["stock"]?.int == 5, "no refusal reserved anything")

        let alice = try Self.token("alice")
        let granted = try await Self.reserve(gateway, basketId, token: alice)
        #expect(granted.status == 201 && granted.json?["consumerId"]?.stringValue == "alice")
        #expect(try await Self.reserve(gateway, basketId, token: alice, body: ["consumerId": "alice"]).status == 201)
        ContractErrorTests.expectError(try await Self.reserve(gateway, basketId, token: alice, body: ["consumerId": "bob"]), 403, "consumer_mismatch")
        // An ES256 token from the identity provider's JWKS
        let es = ConsumerTokenMinter.sign(
            header: #"{"alg":"ES256","kid":"idp-1"}"#, payload: #"{"sub":"carol","exp":\#(now + 600)}"#, es256: Self.esKey)
        #expect(try await Self.reserve(gateway, basketId, token: es).json?["consumerId"]?.stringValue == "carol")
        await gateway.stop()
    }

    @Test("a reservation is read and cancelled only by its consumer or the admin; anyone else gets 404 and nothing changes")
    func ownership() async throws {
        let gateway = try await Self.start()
        let basketId = TestEnvironment.uniqueId("own")
        try await gateway.createBasket(basketId, stock: 2, maxPerConsumer: 2)
        let alice = try Self.token("alice")
        let bob = try Self.token("bob")
        let reservationId = try #require(try await Self.reserve(gateway, basketId, token: alice).json?["reservationId"]?.stringValue)
        let path = "/v1/reservations/\(reservationId)"
        ContractErrorTests.expectError(try await gateway.request(.GET, path), 401, "invalid_token")
        ContractErrorTests.expectError(try await gateway.request(.GET, path, headers: Self.bearer(bob)), 404, "reservation_not_found")
        ContractErrorTests.expectError(try await gateway.request(.DELETE, path, headers: Self.bearer(bob)), 404, "reservation_not_found")
        #expect(try await gateway.request(.GET, path, headers: Self.bearer(alice)).json?["status"]?.stringValue == "pending", "bob cancelled nothing")
        #expect(try await gateway.request(.GET, path, headers: gateway.admin).status == 200)
        // the same 404 as an id that does not exist
        let wellFormed = String(reservationId.prefix(3)) + String(repeating: "0", count: reservationId.count - 3)
        let unknown = try await gateway.request(.GET, "/v1/reservations/\(wellFormed)", headers: Self.bearer(bob))
        let notTheirs = try await gateway.request(.GET, path, headers: Self.bearer(bob))
        ContractErrorTests.expectError(unknown, 404, "reservation_not_found")
        #expect(unknown.body == notTheirs.body, "another's reservation answers byte for byte as one that does not exist")
        // two Authorization headers: refused, whichever comes first
        let doubled = try await gateway.request(.GET, path, headers: Self.bearer(alice) + Self.bearer(bob))
        ContractErrorTests.expectError(doubled, 401, "invalid_token")
        // The admin's header with a second one (any case, even empty) is no admin, on a
        // reservation or an admin endpoint.
        let adminAndEmpty = gateway.admin + [("authorization", "")]
        ContractErrorTests.expectError(try await gateway.request(.GET, path, headers: adminAndEmpty), 401, "invalid_token")
        ContractErrorTests.expectError(try await gateway.request(.DELETE, path, headers: gateway.admin + Self.bearer(bob)), 401, "invalid_token")
        let adminTwice = try await gateway.request(
            .PUT, "/v1/baskets/\(TestEnvironment.uniqueId("twice"))", headers: gateway.admin + [("AUTHORIZATION", "")],
            body: Array(#"{"stock": 1}"#.utf8))
        ContractErrorTests.expectError(adminTwice, 401, "unauthorized")
        #expect(try await gateway.request(.GET, path, headers: Self.bearer(alice)).json?["status"]?.stringValue == "pending")
        #expect(try await gateway.request(.DELETE, path, headers: Self.bearer(alice)).json?["status"]?.stringValue == "cancelled")
        #expect(try await gateway.request(.DELETE, path, headers: gateway.admin).json?["status"]?.stringValue == "cancelled")
        await gateway.stop()
    }

    @Test("an Idempotency-Key belongs to one consumer: the same key from another is another request, and a replay reaches only the first")
    func keysBelongToTheirConsumer() async throws {
        let gateway = try await Self.start()
        let basketId = TestEnvironment.uniqueId("key")
        try await gateway.createBasket(basketId, stock: 3)
        let alice = try Self.token("alice")
        let bob = try Self.token("bob")
        let first = try await Self.reserve(gateway, basketId, token: alice, key: "order-7")
        let theirs = try await Self.reserve(gateway, basketId, token: bob, key: "order-7")
        #expect(first.status == 201 && theirs.status == 201)
        #expect(first.json?["reservationId"] != theirs.json?["reservationId"], "bob never gets alice's reservation id")
        let replay = try await Self.reserve(gateway, basketId, token: alice, key: "order-7")
        #expect(replay.body == first.body)
        #expect(try await gateway.basket(basketId)["pending"]?.int == 2)
        await gateway.stop()
    }
}

extension ConsumerTokenModeTests {
    @Test("10 concurrent reservations with 10 different valid tokens on stock 3: exactly 3 granted, each to its token's consumer")
    func tenTokensOnThree() async throws {
        let gateway = try await Self.start()
        for _ in 0..<5 {
            let basketId = TestEnvironment.uniqueId("ten")
            try await gateway.createBasket(basketId, stock: 3)
            let answers = try await withThrowingTaskGroup(of: (String, TestHTTPResponse).self) { group in
                for index in 0..<10 {
                    let consumer = "consumer-\(index)"
                    let token = try Self.token(consumer)
                    group.addTask { (consumer, try await Self.reserve(gateway, basketId, token: token)) }
                }
                return try await group.reduce(into: [(String, TestHTTPResponse)]()) { $0.append($1) }
            }
            let granted = answers.filter { $0.1.status == 201 }
            #expect(granted.count == 3)
            #expect(granted.allSatisfy { $0.1.json?["consumerId"]?.stringValue == $0.0 })
            #expect(answers.filter { $0.1.status != 201 }.allSatisfy { $0.1.errorCode == "sold_out" })
            #expect(try await gateway.basket(basketId)["stock"]?.int == 0)
        }
        await gateway.stop()
    }

    @Test("a consumer's limit holds against the same consumer's token on two gateways at once")
    func limitAcrossGateways() async throws {
        let first = try await Self.start()
        let second = try await Self.start()
        for _ in 0..<5 {
            let basketId = TestEnvironment.uniqueId("lim")
            try await first.createBasket(basketId, stock: 10, maxPerConsumer: 2)
            let token = try Self.token("eager")
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<12 {
                    let gateway = index % 2 == 0 ? first : second
                    group.addTask { Int(try await Self.reserve(gateway, basketId, token: token).status) }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 201 }.count == 2, "\(statuses)")
            #expect(statuses.filter { $0 == 409 }.count == 10)
        }
        await first.stop()
        await second.stop()
    }
}
