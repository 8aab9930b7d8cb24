import Crypto
import Testing

@testable import ConsumerTokens

/// Every refusal the contract lists ("Consumer identity (v2)"), each next to the nearest accepted
/// token, so a test cannot pass because everything is refused.
@Suite struct VerifierTests {
    let now = Fixture.now

    @Test func acceptsHS256() throws {
        let result = Fixture.verifier().verify(Fixture.hs(), nowSeconds: now)
        #expect(try result.get() == VerifiedConsumer(consumerId: "alice", expiresAt: now + 600))
        // Bytes and substrings too.
        #expect(reason(Fixture.verifier().verify(Array(Fixture.hs().utf8), nowSeconds: now)) == nil)
        #expect(reason(Fixture.verifier().verify(Substring(Fixture.hs()), nowSeconds: now)) == nil)
    }

    @Test func acceptsES256() throws {
        let result = Fixture.verifier().verify(Fixture.es(), nowSeconds: now)
        #expect(try result.get() == VerifiedConsumer(consumerId: "alice", expiresAt: now + 600))
        let second = Fixture.es(#"{"alg":"ES256","kid":"es2"}"#, key: Fixture.esKey2)
        #expect(verify(second) == nil)
    }

    @Test func noToken() {
        #expect(ConsumerTokenVerifier.bearer(nil) == nil)
        #expect(verify("") == .missing)
        #expect(reason(Fixture.verifier().verify([UInt8](), nowSeconds: now)) == .missing)
    }

    @Test func bearerHeader() {
        #expect(ConsumerTokenVerifier.bearer("Bearer abc.def.ghi") == "abc.def.ghi")
        #expect(ConsumerTokenVerifier.bearer("bearer abc") == "abc")
        #expect(ConsumerTokenVerifier.bearer("BEARER abc") == "abc")
        #expect(ConsumerTokenVerifier.bearer("bEaReR abc") == "abc")
        for refused in [
            "", "Bearer", "Bearer ", "Bearer  abc", "Bearer abc ", "Bearer abc def", "Bearer\tabc", "Bearerabc", "Bearer\u{0}abc",
            "Basic abc", "Token abc", " Bearer abc", "Bearer: abc", "Bearer abc\t",
        ] {
            #expect(ConsumerTokenVerifier.bearer(refused) == nil, "\(refused.debugDescription)")
        }
    }

    @Test(arguments: [
        "none", "None", "NONE", "RS256", "HS512", "HS384", "ES384", "ES512", "PS256", "EdDSA", "hs256", "es256", "HS256 ", "", "HS2560",
    ])
    func unsupportedAlgorithm(alg: String) {
        let header = #"{"alg":"\#(alg)","kid":"hs1"}"#
        #expect(verify(Fixture.hs(header)) == .unsupportedAlgorithm)
        // `none` with the empty signature of an unsecured JWS (RFC 7515 §A.5).
        #expect(verify(Fixture.b64(header) + "." + Fixture.b64(Fixture.claims()) + ".") == .unsupportedAlgorithm)
        #expect(verify(Fixture.es(#"{"alg":"\#(alg)","kid":"es1"}"#)) == .unsupportedAlgorithm)
    }

    @Test func algorithmMissingOrNotAString() {
        #expect(verify(Fixture.hs(#"{"kid":"hs1"}"#)) == .malformedHeader)
        #expect(verify(Fixture.hs(#"{"alg":256,"kid":"hs1"}"#)) == .malformedHeader)
        #expect(verify(Fixture.hs(#"{"alg":["HS256"],"kid":"hs1"}"#)) == .malformedHeader)
        #expect(verify(Fixture.hs(#"{"alg":null,"kid":"hs1"}"#)) == .malformedHeader)
    }

    @Test func unknownKey() {
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"hs3"}"#)) == .unknownKey)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"HS1"}"#)) == .unknownKey)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":""}"#)) == .unknownKey)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"hs1\u0000"}"#)) == .unknownKey)
        #expect(verify(Fixture.es(#"{"alg":"ES256","kid":"es3"}"#, key: Fixture.strangerKey)) == .unknownKey)
        // No kid at all (we do not guess), or not a string.
        #expect(verify(Fixture.hs(#"{"alg":"HS256"}"#)) == .malformedHeader)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":1}"#)) == .malformedHeader)
    }

    @Test func unicodeEquivalentKeyIdIsAnotherKeyId() throws {
        // Swift's String equality says "\u{212A}1" (KELVIN SIGN) == "K1"; a key lookup must not.
        #expect("\u{212A}1" == "K1")
        let keys = try ConsumerTokenKeys(hs256: "K1:\(Fixture.b64(Fixture.hsSecret))", jwksJSON: nil)
        let verifier = ConsumerTokenVerifier(keys: keys)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"K1"}"#), verifier: verifier) == nil)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"\u212A1"}"#), verifier: verifier) == .unknownKey)
        #expect(verify(Fixture.hs("{\"alg\":\"HS256\",\"kid\":\"\u{212A}1\"}"), verifier: verifier) == .unknownKey)
    }

    @Test func wrongKey() {
        // Signed with hs2's secret, naming hs1.
        #expect(verify(Fixture.hs(secret: Fixture.hsSecret2)) == .badSignature)
        #expect(verify(Fixture.hs(secret: Array(repeating: 0, count: 32))) == .badSignature)
        // Signed by es2's private key, or by one configured nowhere, naming es1.
        #expect(verify(Fixture.es(key: Fixture.esKey2)) == .badSignature)
        #expect(verify(Fixture.es(key: Fixture.strangerKey)) == .badSignature)
    }

    @Test func algorithmPinnedByKey() {
        // An ES256 header on an HS256 key, with a signature of ES256's length.
        let esOnHS = Fixture.es(#"{"alg":"ES256","kid":"hs1"}"#)
        #expect(verify(esOnHS) == .algorithmMismatch)
        // An HS256 header on an ES256 key.
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"es1"}"#)) == .algorithmMismatch)
        // The classic confusion: an HMAC keyed with the ES256 public key in every form a
        // library might hand to HMAC (SEC 1 point, raw x||y, the JWKS text, PEM, DER).
        let publicKey = Fixture.esKey.publicKey
        let forms: [[UInt8]] = [
            Array(publicKey.x963Representation), Array(publicKey.rawRepresentation), Array(publicKey.compressedRepresentation),
            Array(publicKey.derRepresentation), Array(publicKey.pemRepresentation.utf8), Array(Fixture.jwksText.utf8),
        ]
        for form in forms {
            #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"es1"}"#, secret: form)) == .algorithmMismatch)
        }
    }

    @Test func expiry() {
        let leeway: Int64 = 30
        func token(exp: Int64) -> String { Fixture.hs(Fixture.hsHeader, Fixture.claims(exp: String(exp))) }
        #expect(verify(token(exp: now + 1)) == nil)
        #expect(verify(token(exp: now)) == nil)  // past by 0 s: within the leeway
        #expect(verify(token(exp: now - leeway + 1)) == nil)
        #expect(verify(token(exp: now - leeway)) == .expired)
        #expect(verify(token(exp: now - leeway - 1)) == .expired)
        #expect(verify(token(exp: 0)) == .expired)
        // Without leeway: `exp` itself is already too late (RFC 7519 §4.1.4: "before").
        let strict = ConsumerTokenVerifier(keys: Fixture.keys, leewaySeconds: 0)
        #expect(verify(token(exp: now + 1), verifier: strict) == nil)
        #expect(verify(token(exp: now), verifier: strict) == .expired)
        // Missing `exp`.
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(exp: nil))) == .invalidTime)
    }

    @Test func notBeforeAndIssuedAt() {
        func token(_ extra: String) -> String { Fixture.hs(Fixture.hsHeader, Fixture.claims(extra)) }
        #expect(verify(token(#""nbf":\#(now)"#)) == nil)
        #expect(verify(token(#""nbf":\#(now + 30)"#)) == nil)
        #expect(verify(token(#""nbf":\#(now + 31)"#)) == .notYetValid)
        #expect(verify(token(#""iat":\#(now + 30)"#)) == nil)
        #expect(verify(token(#""iat":\#(now + 31)"#)) == .issuedInFuture)
        #expect(verify(token(#""iat":0,"nbf":0"#)) == nil)
        #expect(verify(token(#""nbf":"\#(now)""#)) == .invalidTime)
        #expect(verify(token(#""iat":null"#)) == .invalidTime)
        #expect(verify(token(#""iat":-1"#)) == .invalidTime)
        #expect(verify(token(#""nbf":1e300"#)) == .invalidTime)
    }

    @Test(
        arguments: [
            nil, #""""#, "1", "true", "null", #"["alice"]"#, #"{"id":"alice"}"#, #""alice bob""#, #""alice/x""#, #""caf\u00e9""#,
            #""café""#, #""alice\n""#, #""\#(String(repeating: "a", count: 129))""#, #""a+b""#, #""<script>""#,
        ] as [String?])
    func invalidSubject(sub: String?) {
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(sub: sub))) == .invalidSubject)
    }

    @Test func validSubjects() throws {
        for sub in ["a", "alice@example.com", "user:42", "A-Z_a.z-0:9@", String(repeating: "x", count: 128)] {
            let result = Fixture.verifier().verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(sub: "\"\(sub)\"")), nowSeconds: now)
            #expect(try result.get().consumerId == sub)
        }
        // An escaped spelling of a valid id is the same id.
        let escaped = Fixture.hs(Fixture.hsHeader, Fixture.claims(sub: #""\u0061lice""#))
        #expect(try Fixture.verifier().verify(escaped, nowSeconds: now).get().consumerId == "alice")
    }

    @Test func size() {
        // Pad a valid token with an extra claim to exactly 4096 bytes: accepted; one more: refused.
        func token(padding: Int) -> String {
            Fixture.hs(Fixture.hsHeader, Fixture.claims(#""pad":"\#(String(repeating: "x", count: padding))""#))
        }
        var padding = 0
        while token(padding: padding + 1).utf8.count <= 4096 { padding += 1 }
        // base64 grows in steps of 4/3: find a padding landing exactly on 4096 or the nearest.
        let largest = token(padding: padding)
        #expect(largest.utf8.count <= 4096 && largest.utf8.count >= 4094)
        #expect(verify(largest) == nil)
        let over = token(padding: padding + 1)
        #expect(over.utf8.count > 4096)
        #expect(verify(over) == .tooLong)
        // 4097 bytes of anything, and far more.
        #expect(verify(String(repeating: "a", count: 4097)) == .tooLong)
        #expect(verify(Fixture.hs() + String(repeating: "A", count: 4097 - Fixture.hs().utf8.count)) == .tooLong)
        #expect(verify(String(repeating: "a.", count: 100_000)) == .tooLong)
    }

    @Test func structure() {
        let token = Fixture.hs()
        let parts = Fixture.parts(token)
        #expect(verify(parts[0] + "." + parts[1]) == .malformed)
        #expect(verify(token + ".") == .malformed)
        #expect(verify(token + "." + parts[2]) == .malformed)
        #expect(verify("..") == .malformedHeader)  // empty header: no JSON
        #expect(verify(".") == .malformed)
        #expect(verify("abc") == .malformed)
        #expect(verify(parts[0] + ".." + parts[2]) == .badSignature)  // the empty payload is signed over, wrongly
    }

    @Test(arguments: ["+", "/", "=", "==", " ", "\n", "\t", "\r", "%", "*", "é", "\u{0}", "~"])
    func notBase64url(insert: String) {
        let token = Fixture.hs()
        let parts = Fixture.parts(token).map(String.init)
        for part in 0..<3 {
            for position in [0, parts[part].count / 2, parts[part].count] {
                var changed = parts
                changed[part].insert(contentsOf: insert, at: changed[part].index(changed[part].startIndex, offsetBy: position))
                let result = verify(changed.joined(separator: "."))
                #expect(result == .malformed, "part \(part) position \(position): \(String(describing: result))")
            }
        }
        // Replacing rather than inserting too (the length stays a valid one).
        for part in 0..<3 {
            var changed = parts
            changed[part] = String(changed[part].dropLast()) + insert
            #expect(verify(changed.joined(separator: ".")) != nil)
        }
    }

    @Test func padding() {
        // The same bytes, padded as standard base64 would pad them: refused in every part.
        let header = Fixture.b64(Fixture.hsHeader)
        let paddedLength = (header.count + 3) / 4 * 4
        let padded = header + String(repeating: "=", count: paddedLength - header.count)
        let token = Fixture.hs()
        let parts = Fixture.parts(token).map(String.init)
        if padded != header { #expect(verify([padded, parts[1], parts[2]].joined(separator: ".")) == .malformed) }
        // The signature of HS256 is 32 bytes: 43 characters, one `=` when padded.
        #expect(parts[2].count == 43)
        #expect(verify(token + "=") == .malformed)
    }

    @Test func nonCanonicalTrailingBits() {
        // 32 bytes encode to 43 characters whose last one carries 2 unused bits: setting them
        // gives another string for the same bytes, which must be refused, not decoded the same.
        let token = Fixture.hs()
        let last = token.utf8.last!
        let index = Int(Base64URL.alphabet.firstIndex(of: last)!)
        for unused in 1..<4 {
            let other = Base64URL.alphabet[index ^ unused]
            let changed = String(decoding: Array(token.utf8.dropLast()) + [other], as: UTF8.self)
            #expect(verify(changed) == .malformed)
        }
    }

    @Test(arguments: ["not json", "", "{", #"{"alg":"HS256","kid":"hs1""#, #"{"alg":"HS256","kid":"hs1"}x"#, "\u{FEFF}{}", "{'alg':'HS256'}"])
    func headerNotJSON(header: String) {
        #expect(verify(Fixture.hs(header)) == .malformedHeader)
    }

    @Test(arguments: ["not json", "", "{", #"{"sub":"alice","exp":1800000600"#, #"{"sub":"alice","exp":1800000600}}"#, "{sub:1}"])
    func payloadNotJSON(payload: String) {
        #expect(verify(Fixture.hs(Fixture.hsHeader, payload)) == .malformedClaims)
        #expect(verify(Fixture.es(Fixture.esHeader, payload)) == .malformedClaims)
    }

    @Test func partsMustBeObjects() {
        #expect(verify(Fixture.hs(#"["HS256","hs1"]"#)) == .malformedHeader)
        #expect(verify(Fixture.hs(#""HS256""#)) == .malformedHeader)
        #expect(verify(Fixture.hs("null")) == .malformedHeader)
        for payload in [#"["alice",1800000600]"#, #""alice""#, "null", "1800000600", "true", "[]"] {
            #expect(verify(Fixture.hs(Fixture.hsHeader, payload)) == .malformedClaims)
        }
    }

    @Test func duplicateMembers() {
        // In the header: a reader keeping the first alg and one keeping the last would disagree.
        #expect(verify(Fixture.hs(#"{"alg":"HS256","alg":"none","kid":"hs1"}"#)) == .malformedHeader)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"hs1","kid":"hs2"}"#)) == .malformedHeader)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"hs1","kid":"hs1"}"#)) == .malformedHeader)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"hs1","\u0061lg":"HS256"}"#)) == .malformedHeader)
        // In the claims.
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(#""sub":"mallory""#))) == .malformedClaims)
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(#""exp":1"#))) == .malformedClaims)
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(#""s\u0075b":"alice""#))) == .malformedClaims)
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(#""x":{"a":1,"a":2}"#))) == .malformedClaims)
        #expect(verify(Fixture.es(Fixture.esHeader, Fixture.claims(#""sub":"mallory""#))) == .malformedClaims)
        // Distinct members are fine.
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(#""x":{"a":1,"b":{"a":2}},"a":3"#))) == nil)
    }

    @Test(arguments: [
        #""1800000600""#, "true", "null", "[1800000600]", #"{"t":1}"#, "1e300", "9223372036854775807", "9223372036854775808",
        "18446744073709551616", "-1", "-0", "-1800000600", "253402300800", "1e19", "1E13", "2.6e11", "1e99999999999999999999",
        String(repeating: "9", count: 2500), "1" + String(repeating: "0", count: 400) + "e-388",
    ])
    func invalidExpiry(exp: String) {
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(exp: exp))) == .invalidTime, "\(exp.prefix(40))")
    }

    @Test func numericDates() {
        func expiresAt(_ exp: String) -> Int64? {
            try? Fixture.verifier().verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(exp: exp)), nowSeconds: 0).get().expiresAt
        }
        #expect(expiresAt("1800000600") == 1_800_000_600)
        #expect(expiresAt("1800000600.999") == 1_800_000_600)  // floored
        #expect(expiresAt("1.8000006e9") == 1_800_000_600)
        #expect(expiresAt("18000006E2") == 1_800_000_600)
        #expect(expiresAt("180000060000e-2") == 1_800_000_600)
        #expect(expiresAt("1800000600.5e0") == 1_800_000_600)
        #expect(expiresAt("253402300799") == 253_402_300_799)  // 9999-12-31T23:59:59Z: the last accepted
        #expect(expiresAt("253402300799.9") == 253_402_300_799)
        // Below 30 s at time 0, within the leeway.
        #expect(expiresAt("0.5") == 0)
        #expect(expiresAt("1e-400") == 0)
        #expect(expiresAt("1" + String(repeating: "0", count: 400) + "e-391") == 1_000_000_000)
        #expect(expiresAt("0.0000000000000000000000001e34") == 1_000_000_000)
        // Not JSON numbers at all.
        for notNumber in ["NaN", "Infinity", "-Infinity", "0x10", "01", "1.", ".5", "+1", "1e", "1_000"] {
            #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(exp: notNumber))) == .malformedClaims, "\(notNumber)")
        }
    }

    @Test func audience() {
        let verifier = Fixture.verifier(audience: "shop")
        func token(_ aud: String?) -> String { Fixture.hs(Fixture.hsHeader, Fixture.claims(aud.map { #""aud":\#($0)"# } ?? "")) }
        #expect(verify(token(#""shop""#), verifier: verifier) == nil)
        #expect(verify(token(#"["other","shop"]"#), verifier: verifier) == nil)
        #expect(verify(token(#"["shop"]"#), verifier: verifier) == nil)
        for refused in [
            nil, #""other""#, #""Shop""#, #""shop ""#, #""shop\u0000""#, #"["other","x"]"#, "[]", "1", "null", "true", #"{"shop":1}"#,
            #"["shop",1]"#, #"[["shop"]]"#, #""""#,
        ] as [String?] {
            #expect(verify(token(refused), verifier: verifier) == .audienceMismatch, "\(refused ?? "missing")")
        }
        // No audience configured (nil or empty): `aud` is not looked at, whatever it is.
        for unchecked in [Fixture.verifier(), Fixture.verifier(audience: "")] {
            #expect(verify(token(#""other""#), verifier: unchecked) == nil)
            #expect(verify(token("1"), verifier: unchecked) == nil)
        }
        // ES256 the same.
        #expect(verify(Fixture.es(Fixture.esHeader, Fixture.claims(#""aud":"other""#)), verifier: verifier) == .audienceMismatch)
        #expect(verify(Fixture.es(Fixture.esHeader, Fixture.claims(#""aud":["shop"]"#)), verifier: verifier) == nil)
    }

    @Test func criticalHeader() {
        for crit in [#"["exp"]"#, "[]", #"["b64"]"#, "null", #""x""#] {
            #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"hs1","crit":\#(crit)}"#)) == .criticalHeader)
            #expect(verify(Fixture.es(#"{"alg":"ES256","kid":"es1","crit":\#(crit)}"#)) == .criticalHeader)
        }
    }

    @Test func otherHeaderMembersIgnored() {
        // We take keys only from configuration: a token's own `jwk`, `jku`, `x5u` change nothing.
        let header = #"{"alg":"HS256","kid":"hs1","typ":"at+jwt","jku":"https://evil.example/jwks","jwk":{"kty":"oct","k":"AAAA"}}"#
        #expect(verify(Fixture.hs(header)) == nil)
    }

    @Test func signatureLength() {
        let hs = Fixture.parts(Fixture.hs())
        let mac = Base64URL.decode(hs[2].utf8)!
        #expect(mac.count == 32)
        for bad in [Array(mac.prefix(31)), Array(mac.prefix(16)), mac + [0], [], mac + mac, Array(mac.prefix(1))] {
            #expect(verify("\(hs[0]).\(hs[1]).\(Fixture.b64(bad))") == .badSignature, "\(bad.count) bytes")
        }
        let es = Fixture.parts(Fixture.es())
        let raw = Base64URL.decode(es[2].utf8)!
        #expect(raw.count == 64)
        let der = Array(try! P256.Signing.ECDSASignature(rawRepresentation: raw).derRepresentation)
        for bad in [der, Array(raw.prefix(63)), raw + [0], [], Array(raw.prefix(32)), raw + raw, [0x30] + raw] {
            #expect(verify("\(es[0]).\(es[1]).\(Fixture.b64(bad))") == .badSignature, "\(bad.count) bytes")
        }
        // All-zero and all-ones R||S: not valid signatures (r and s must be in 1..n-1).
        for filler: UInt8 in [0, 0xFF] {
            #expect(verify("\(es[0]).\(es[1]).\(Fixture.b64([UInt8](repeating: filler, count: 64)))") == .badSignature)
        }
    }

    /// Every single-bit change of a valid token is refused. A strict base64url decoder makes this
    /// exact: a changed character either leaves the alphabet, sets unused trailing bits (refused
    /// as non-canonical), breaks the structure, or changes the decoded bytes, which changes what
    /// the signature covers or the signature itself.
    @Test(arguments: ["HS256", "ES256"])
    func everyBitFlipRefused(alg: String) {
        let verifier = Fixture.verifier()
        let token = Array((alg == "HS256" ? Fixture.hs() : Fixture.es()).utf8)
        #expect(reason(verifier.verify(token, nowSeconds: now)) == nil)
        var accepted: [(Int, Int)] = []
        for position in token.indices {
            for bit in 0..<8 {
                var flipped = token
                flipped[position] ^= 1 << bit
                if reason(verifier.verify(flipped, nowSeconds: now)) == nil { accepted.append((position, bit)) }
            }
        }
        #expect(accepted.isEmpty, "accepted flips (byte, bit): \(accepted)")
        // And the original still verifies (from the cache for ES256).
        #expect(reason(verifier.verify(token, nowSeconds: now)) == nil)
    }

    @Test func anyNowIsSafe() {
        for now: Int64 in [.min, .min + 1, -1, 0, .max - 1, .max] {
            _ = verify(Fixture.hs(), now: now)
            _ = verify(Fixture.es(), now: now)
        }
        #expect(verify(Fixture.hs(), now: .max) == .expired)
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(#""nbf":0"#)), now: .min) == .notYetValid)
    }

    @Test func errorsSayNothingSecret() {
        for reason in ConsumerTokenError.Reason.allCases {
            let error = ConsumerTokenError(reason)
            #expect(error.description == "consumer token refused: \(reason.rawValue)")
            #expect(reason.rawValue.allSatisfy { $0.isLowercase || $0 == "_" })
        }
    }
}
