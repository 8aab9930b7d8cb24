import Crypto
import Testing

@testable import ConsumerTokens

/// `CONSUMER_TOKEN_KEYS` and `CONSUMER_TOKEN_JWKS` parsing: a bad configuration is refused as a
/// whole, with an error naming the entry and never the secret.
@Suite struct KeysTests {
    let secret = Fixture.b64(Fixture.hsSecret)

    func refusal(hs256: String? = nil, jwks: String? = nil) -> ConsumerTokenKeysError? {
        do {
            _ = try ConsumerTokenKeys(hs256: hs256, jwksJSON: jwks.map { Array($0.utf8) })
            return nil
        } catch {
            return error
        }
    }

    /// A JWKS with one entry: the es1 key's members, changed as given (nil value: left out).
    func jwks(_ changes: [String: String?] = [:]) -> String {
        let point = Array(Fixture.esKey.publicKey.x963Representation)
        var members: [(String, String)] = [
            ("kty", #""EC""#), ("crv", #""P-256""#), ("kid", #""es1""#),
            ("x", "\"\(Fixture.b64(point[1..<33]))\""), ("y", "\"\(Fixture.b64(point[33..<65]))\""),
        ]
        for (name, value) in changes {
            members.removeAll { $0.0 == name }
            if let value { members.append((name, value)) }
        }
        return #"{"keys":[{"# + members.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}]}"
    }

    @Test func parsesBothKinds() throws {
        let keys = Fixture.keys
        #expect(!keys.isEmpty)
        #expect(keys.hs256Count == 2 && keys.es256Count == 2)
        #expect(keys.keyIds == ["es1", "es2", "hs1", "hs2"])
        // Spaces around entries are fine; a single key; a JWKS alone.
        #expect(try ConsumerTokenKeys(hs256: " a:\(secret) , b:\(secret)", jwksJSON: nil).hs256Count == 2)
        #expect(try ConsumerTokenKeys(hs256: nil, jwksJSON: Array(jwks().utf8)).es256Count == 1)
        // Optional members with the values that allow verification, and unknown ones, are fine.
        let full = jwks(["use": #""sig""#, "alg": #""ES256""#, "key_ops": #"["verify"]"#, "x5t": #""abc""#])
        #expect(try ConsumerTokenKeys(hs256: nil, jwksJSON: Array(full.utf8)).es256Count == 1)
        // Longer secrets are fine (64 bytes).
        #expect(try ConsumerTokenKeys(hs256: "a:\(Fixture.b64([UInt8](repeating: 7, count: 64)))", jwksJSON: nil).hs256Count == 1)
    }

    @Test func nothingConfigured() throws {
        #expect(try ConsumerTokenKeys(hs256: nil, jwksJSON: nil).isEmpty)
        #expect(try ConsumerTokenKeys(hs256: "", jwksJSON: nil).isEmpty)
        #expect(try ConsumerTokenKeys(hs256: "   ", jwksJSON: nil).isEmpty)
        // Nothing verifies against no keys.
        let verifier = ConsumerTokenVerifier(keys: try ConsumerTokenKeys(hs256: nil, jwksJSON: nil))
        #expect(verify(Fixture.hs(), verifier: verifier) == .unknownKey)
    }

    @Test func shortSecret() {
        let short = Fixture.b64([UInt8](repeating: 0xAB, count: 31))
        let error = refusal(hs256: "k1:\(short)")
        #expect(error?.reason == .secretTooShort && error?.kid == "k1" && error?.entry == 1 && error?.source == .keys)
        #expect(!(error?.description.contains(short) ?? true))
        #expect(refusal(hs256: "k1:")?.reason == .secretTooShort)
        // Exactly 32 bytes is enough.
        #expect(refusal(hs256: "k1:\(Fixture.b64([UInt8](repeating: 0xAB, count: 32)))") == nil)
    }

    @Test(arguments: ["=", "+", "/", " ", "%", "é", "\t", "."])
    func secretNotBase64url(bad: String) {
        // Standard base64's `+` `/` `=`, or anything else outside base64url, inside the secret.
        let broken = secret.prefix(20) + bad + secret.dropFirst(20)
        let error = refusal(hs256: "k1:\(broken)")
        #expect(error?.reason == .secretNotBase64url && error?.kid == "k1")
        #expect(!(error?.description.contains(String(secret.prefix(20))) ?? true))
        // Padding at the end too.
        #expect(refusal(hs256: "k1:\(secret)=")?.reason == .secretNotBase64url)
    }

    @Test func malformedEntries() {
        #expect(refusal(hs256: secret)?.reason == .missingSeparator)
        #expect(!(refusal(hs256: secret)?.description.contains(secret) ?? true))
        #expect(refusal(hs256: ":\(secret)")?.reason == .invalidKeyId)
        #expect(refusal(hs256: "a b:\(secret)")?.reason == .invalidKeyId)
        #expect(refusal(hs256: "\(String(repeating: "k", count: 129)):\(secret)")?.reason == .invalidKeyId)
        #expect(refusal(hs256: "a:\(secret),")?.reason == .emptyEntry)
        #expect(refusal(hs256: "a:\(secret),,b:\(secret)")?.entry == 2)
        // The second colon is part of the secret, which is then not base64url.
        #expect(refusal(hs256: "a:b:\(secret)")?.reason == .secretNotBase64url)
        // An error in the second entry names the second entry.
        let error = refusal(hs256: "a:\(secret),b:c2hvcnQ")
        #expect(
            error?.entry == 2 && error?.kid == "b" && error?.description == "CONSUMER_TOKEN_KEYS: secret is shorter than 32 bytes (entry 2, kid b)")
    }

    @Test func duplicateKeyIds() {
        #expect(refusal(hs256: "a:\(secret),a:\(secret)")?.reason == .duplicateKeyId)
        // The same kid in both settings.
        let both = refusal(hs256: "es1:\(secret)", jwks: jwks())
        #expect(both?.reason == .duplicateKeyId && both?.source == .jwks && both?.kid == "es1")
        // Twice in the JWKS.
        let entry = String(jwks().dropFirst(#"{"keys":["#.count).dropLast(2))
        #expect(refusal(jwks: #"{"keys":[\#(entry),\#(entry)]}"#)?.reason == .duplicateKeyId)
    }

    @Test func jwksEntries() {
        let cases: [([String: String?], ConsumerTokenKeysError.Reason)] = [
            (["crv": #""P-384""#], .unsupportedCurve),
            (["crv": #""secp256k1""#], .unsupportedCurve),
            (["crv": nil], .unsupportedCurve),
            (["kty": #""RSA""#, "n": #""AQAB""#, "e": #""AQAB""#], .unsupportedKeyType),
            (["kty": #""OKP""#, "crv": #""Ed25519""#], .unsupportedKeyType),
            (["kty": #""oct""#, "k": "\"\(secret)\""], .unsupportedKeyType),
            (["kty": nil], .unsupportedKeyType),
            (["kid": nil], .invalidKeyId),
            (["kid": #""""#], .invalidKeyId),
            (["kid": "1"], .invalidKeyId),
            (["kid": #""a,b""#], .invalidKeyId),
            (["use": #""enc""#], .notForSignatures),
            (["use": "1"], .notForSignatures),
            (["key_ops": #"["encrypt"]"#], .notForSignatures),
            (["key_ops": #""verify""#], .notForSignatures),
            (["alg": #""ES384""#], .algorithmNotES256),
            (["alg": #""RS256""#], .algorithmNotES256),
            (["alg": #""HS256""#], .algorithmNotES256),
            (["alg": "null"], .algorithmNotES256),
            (["d": "\"\(secret)\""], .privateKeyMaterial),
            (["x": nil], .invalidCoordinates),
            (["y": "1"], .invalidCoordinates),
            (["x": "\"\(Fixture.b64([UInt8](repeating: 1, count: 31)))\""], .invalidCoordinates),
            (["x": "\"\(Fixture.b64([UInt8](repeating: 1, count: 33)))\""], .invalidCoordinates),
            (["y": "\"\(Fixture.b64([UInt8](repeating: 1, count: 48)))\""], .invalidCoordinates),
            (["y": #""+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+/+""#], .invalidCoordinates),
            (["x": "\"\(secret)=\""], .invalidCoordinates),
        ]
        for (changes, expected) in cases {
            let error = refusal(jwks: jwks(changes))
            #expect(error?.reason == expected, "\(changes): \(String(describing: error))")
            #expect(error?.source == .jwks && error?.entry == 1)
        }
    }

    @Test func pointNotOnCurve() {
        let point = Array(Fixture.esKey.publicKey.x963Representation)
        var y = Array(point[33..<65])
        y[31] ^= 1
        #expect(refusal(jwks: jwks(["y": "\"\(Fixture.b64(y))\""]))?.reason == .pointNotOnCurve)
        // (0, 0) and a coordinate of all ones (above the field prime) neither.
        let zero = "\"\(Fixture.b64([UInt8](repeating: 0, count: 32)))\""
        #expect(refusal(jwks: jwks(["x": zero, "y": zero]))?.reason == .pointNotOnCurve)
        let ones = "\"\(Fixture.b64([UInt8](repeating: 0xFF, count: 32)))\""
        #expect(refusal(jwks: jwks(["x": ones]))?.reason == .pointNotOnCurve)
    }

    @Test func jwksDocument() {
        #expect(refusal(jwks: "not json")?.reason == .jwksNotJSON)
        #expect(refusal(jwks: "")?.reason == .jwksNotJSON)
        #expect(refusal(jwks: "[]")?.reason == .jwksNotJSON)
        #expect(refusal(jwks: jwks() + "x")?.reason == .jwksNotJSON)
        #expect(refusal(jwks: "{}")?.reason == .jwksWithoutKeys)
        #expect(refusal(jwks: #"{"keys":[]}"#)?.reason == .jwksWithoutKeys)
        #expect(refusal(jwks: #"{"keys":{}}"#)?.reason == .jwksWithoutKeys)
        #expect(refusal(jwks: #"{"keys":["x"]}"#)?.reason == .jwkNotObject)
        // A duplicate member in an entry (which x would a reader take?) or at the top.
        #expect(refusal(jwks: jwks(["kid": #""es1","kid":"es9""#]))?.reason == .jwksNotJSON)
        #expect(refusal(jwks: #"{"keys":[],"keys":[]}"#)?.reason == .jwksNotJSON)
        // Far too large.
        let huge = #"{"keys":[],"pad":""# + String(repeating: "x", count: ConsumerTokenKeys.maximumJWKSBytes) + #""}"#
        #expect(refusal(jwks: huge)?.reason == .jwksTooLarge)
        // An error in the second entry names it.
        let two = #"{"keys":[\#(String(jwks().dropFirst(9).dropLast(2))),{"kty":"EC","crv":"P-521","kid":"k2"}]}"#
        let error = refusal(jwks: two)
        #expect(error?.entry == 2 && error?.kid == "k2" && error?.reason == .unsupportedCurve)
    }

    @Test func everyReasonHasAText() {
        for reason in ConsumerTokenKeysError.Reason.allCases { #expect(!reason.rawValue.isEmpty) }
    }
}
