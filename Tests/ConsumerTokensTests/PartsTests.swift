import Crypto
import Testing

@testable import ConsumerTokens

/// The pieces under the verifier: base64url, the JSON reader, numeric dates, the minter.
@Suite struct PartsTests {
    @Test func base64urlRoundTrips() {
        var generator = SystemRandomNumberGenerator()
        for count in 0..<200 {
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let text = Base64URL.encode(bytes)
            #expect(text.count == (count * 4 + 2) / 3)
            #expect(Base64URL.decode(text) == bytes)
        }
        #expect(Base64URL.encodeString([0xFB, 0xFF]) == "-_8")
    }

    @Test("one byte outside the alphabet anywhere (in a group of four or in the tail) refuses the whole text")
    func base64urlRefusesEveryBadPosition() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Set(Base64URL.alphabet)
        let outside = (0...255).map(UInt8.init).filter { !alphabet.contains($0) }
        for count in 1..<40 {
            let text = Base64URL.encode((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
            for position in text.indices {
                for bad in [outside.randomElement(using: &generator)!, 0x3D, 0x2B, 0x2F, 0x00, 0xFF] {
                    var changed = text
                    changed[position] = bad
                    #expect(Base64URL.decode(changed) == nil, "\(changed) at \(position)")
                }
            }
        }
    }

    @Test func base64urlStrict() {
        #expect(Base64URL.decode("QQ".utf8) == [0x41])
        #expect(Base64URL.decode("QR".utf8) == nil)  // unused bits set: the non-canonical "QQ"
        #expect(Base64URL.decode("QUI".utf8) == [0x41, 0x42])
        #expect(Base64URL.decode("QUJ".utf8) == nil)
        #expect(Base64URL.decode("Q".utf8) == nil)  // a lone character holds no byte
        #expect(Base64URL.decode("QUJDR".utf8) == nil)
        for bad in ["QQ==", "QQ=", "+/8", "a b", "QQ\n", "QQ.", "QQ\u{0}"] { #expect(Base64URL.decode(bad.utf8) == nil, "\(bad)") }
        #expect(Base64URL.decode("".utf8) == [])
        // Every 2- and 3-character string decodes to bytes that re-encode to itself, or is refused.
        let alphabet = Base64URL.alphabet
        for a in alphabet {
            for b in alphabet {
                if let bytes = Base64URL.decode([a, b]) { #expect(Base64URL.encode(bytes) == [a, b]) }
                for c in alphabet.prefix(8) {
                    if let bytes = Base64URL.decode([a, b, c]) { #expect(Base64URL.encode(bytes) == [a, b, c]) }
                }
            }
        }
    }

    @Test func jsonReader() {
        #expect(JSONValue.parse(Array(#" {"a":[1,-2.5e3,true,false,null,"x",{}]} "#.utf8)) != nil)
        #expect(JSONValue.parseObject(Array(#"{"a":"\u00e9\ud83d\ude00\/\"\\\b\f\n\r\t"}"#.utf8))?["a"] == .string("é😀/\"\\\u{8}\u{c}\n\r\t"))
        for bad in [
            #"{"a":"\ud83d"}"#, #"{"a":"\ude00"}"#, #"{"a":"\ud83d\u0041"}"#, #"{"a":"\x"}"#, #"{"a":"\u12"}"#, "{\"a\":\"\u{1}\"}",
            #"{"a":1,}"#, #"[1,]"#, #"{"a" 1}"#, #"{1:1}"#, "{\"a\":1}\u{0}", "tru", "nul", "{\"a\":01}", "{\"a\":-}", "{\"a\":1e+}",
            #"{"a":1 "b":2}"#, "", " ", "{\"a\":\"unterminated}",
        ] {
            #expect(JSONValue.parse(Array(bad.utf8)) == nil, "\(bad)")
        }
        // Invalid UTF-8 in a string (a lone continuation byte, an overlong form, a surrogate).
        for bytes: [UInt8] in [[0x80], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xFF]] {
            #expect(JSONValue.parse(Array(#"{"a":""#.utf8) + bytes + Array(#""}"#.utf8)) == nil)
        }
        // Nesting is bounded; deep input is refused, not a stack overflow.
        let depth = JSONValue.maxDepth
        #expect(JSONValue.parse(Array((String(repeating: "[", count: depth) + String(repeating: "]", count: depth)).utf8)) != nil)
        #expect(JSONValue.parse(Array((String(repeating: "[", count: depth + 1) + String(repeating: "]", count: depth + 1)).utf8)) == nil)
        #expect(JSONValue.parse(Array(String(repeating: "[", count: 100_000).utf8)) == nil)
        #expect(JSONValue.parse(Array(String(repeating: #"{"a":"#, count: 10_000).utf8)) == nil)
    }

    @Test func numericDates() {
        func seconds(_ text: String) -> Int64? { NumericDate.seconds(Array(text.utf8)) }
        #expect(seconds("0") == 0)
        #expect(seconds("1") == 1)
        #expect(seconds("0.999") == 0)
        #expect(seconds("10") == 10)
        #expect(seconds("1e1") == 10)
        #expect(seconds("1E+1") == 10)
        #expect(seconds("100e-1") == 10)
        #expect(seconds("105e-1") == 10)
        #expect(seconds("0.00105e4") == 10)
        #expect(seconds("1700000000") == 1_700_000_000)
        #expect(seconds("1700000000.000000000000000000000001") == 1_700_000_000)
        #expect(seconds("253402300799") == 253_402_300_799)
        #expect(seconds("253402300800") == nil)
        #expect(seconds("999999999999") == nil)
        #expect(seconds("1000000000000") == nil)
        #expect(seconds("-1") == nil)
        #expect(seconds("-0") == nil)
        #expect(seconds("1e100000000000000000000000") == nil)
        #expect(seconds("1e-100000000000000000000000") == 0)
        #expect(seconds("0e100000") == 0)
        // Text the JSON reader would never pass on: refused or read, never a trap.
        for text in ["", "1x", "x", "1e+", "1e", "1.2.3", "1e5e5"] { _ = seconds(text) }
        #expect(seconds("1x") == nil && seconds("") == nil)
        #expect(NumericDate.seconds(.string("1")) == nil)
        #expect(NumericDate.seconds(nil) == nil)
    }

    @Test func minterMakesTokensTheVerifierAccepts() throws {
        let minter = ConsumerTokenMinter(keys: Fixture.keys, es256PrivateKeys: ["es1": Fixture.esKey])
        let verifier = Fixture.verifier(audience: "shop")
        for kid in ["hs1", "hs2", "es1"] {
            let token = try minter.mint(kid: kid, sub: "alice", expiresIn: 600, audience: "shop", now: Fixture.now)
            #expect(try verifier.verify(token, nowSeconds: Fixture.now).get() == VerifiedConsumer(consumerId: "alice", expiresAt: Fixture.now + 600))
            #expect(verify(token, verifier: verifier, now: Fixture.now + 630) == .expired)
        }
        // Audiences needing escapes round-trip.
        let odd = "shop \"quoted\" \\ \u{1}é"
        let token = try minter.mint(kid: "hs1", sub: "alice", expiresIn: 60, audience: odd, now: Fixture.now)
        #expect(verify(token, verifier: Fixture.verifier(audience: odd)) == nil)
    }

    @Test func minterRefusesWhatTheVerifierWould() {
        let minter = ConsumerTokenMinter(keys: Fixture.keys)
        #expect(throws: ConsumerTokenMinterError.unknownKey) { try minter.mint(kid: "es1", sub: "alice", expiresIn: 60, now: 0) }
        #expect(throws: ConsumerTokenMinterError.unknownKey) { try minter.mint(kid: "nope", sub: "alice", expiresIn: 60, now: 0) }
        #expect(throws: ConsumerTokenMinterError.invalidSubject) { try minter.mint(kid: "hs1", sub: "a b", expiresIn: 60, now: 0) }
        #expect(throws: ConsumerTokenMinterError.invalidSubject) { try minter.mint(kid: "hs1", sub: "", expiresIn: 60, now: 0) }
        #expect(throws: ConsumerTokenMinterError.invalidLifetime) { try minter.mint(kid: "hs1", sub: "a", expiresIn: 0, now: 0) }
        #expect(throws: ConsumerTokenMinterError.invalidLifetime) { try minter.mint(kid: "hs1", sub: "a", expiresIn: .max, now: 1) }
        #expect(throws: ConsumerTokenMinterError.invalidLifetime) { try minter.mint(kid: "hs1", sub: "a", expiresIn: 60, now: -1) }
        #expect(throws: ConsumerTokenMinterError.invalidLifetime) { try minter.mint(kid: "hs1", sub: "a", expiresIn: 60, now: .max) }
    }

    @Test func jwksFromMinterParses() throws {
        let text = ConsumerTokenMinter.jwks([("a", Fixture.esKey.publicKey), ("b", Fixture.strangerKey.publicKey)])
        let keys = try ConsumerTokenKeys(hs256: nil, jwksJSON: Array(text.utf8))
        #expect(keys.keyIds == ["a", "b"])
    }
}
