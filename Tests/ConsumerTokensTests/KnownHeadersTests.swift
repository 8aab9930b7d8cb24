import Crypto
import Testing

@testable import ConsumerTokens

/// Header segments remembered after a verified token: they skip only the header's parsing, never
/// the signature or the key's algorithm, and only signed headers go in.
@Suite struct KnownHeadersTests {
    let now = Fixture.now

    @Test func rememberedOnlyAfterAValidSignature() {
        let verifier = Fixture.verifier(cacheCapacity: 0)
        // Forged with a header of its own: refused, and the header is not remembered.
        let forged = Fixture.hs(#"{"kid":"hs1","alg":"HS256"}"#, secret: Array(repeating: 7, count: 32))
        #expect(verify(forged, verifier: verifier) == .badSignature)
        #expect(verifier.knownHeaders.named(by: ArraySlice(Fixture.b64(#"{"kid":"hs1","alg":"HS256"}"#).utf8)) == nil)
        // Signed, but expired: not remembered either.
        let expired = #"{"kid":"hs1","alg":"HS256","typ":"x"}"#
        #expect(verify(Fixture.hs(expired, Fixture.claims(exp: String(now - 3600))), verifier: verifier) == .expired)
        #expect(verifier.knownHeaders.named(by: ArraySlice(Fixture.b64(expired).utf8)) == nil)
        // Signed: remembered.
        #expect(verify(Fixture.hs(), verifier: verifier) == nil)
        #expect(verifier.knownHeaders.named(by: ArraySlice(Fixture.b64(Fixture.hsHeader).utf8))?.kid == "hs1")
    }

    @Test func aRememberedHeaderStillNeedsTheSignature() {
        let verifier = Fixture.verifier(cacheCapacity: 0)
        #expect(verify(Fixture.hs(), verifier: verifier) == nil)
        #expect(verify(Fixture.es(), verifier: verifier) == nil)
        // The same headers, other payloads: a wrong key, a changed payload, a truncated MAC.
        #expect(verify(Fixture.hs(secret: Fixture.hsSecret2), verifier: verifier) == .badSignature)
        #expect(verify(Fixture.es(key: Fixture.strangerKey), verifier: verifier) == .badSignature)
        let parts = Fixture.parts(Fixture.hs())
        let other = Fixture.b64(Fixture.claims(sub: #""mallory""#))
        #expect(verify("\(parts[0]).\(other).\(parts[2])", verifier: verifier) == .badSignature)
        let truncated = Fixture.b64(Base64URL.decode(Array(parts[2].utf8))!.prefix(16))
        #expect(verify("\(parts[0]).\(parts[1]).\(truncated)", verifier: verifier) == .badSignature)
        // And the claims are still checked: an expired token with a remembered header.
        #expect(verify(Fixture.hs(Fixture.hsHeader, Fixture.claims(exp: String(now - 3600))), verifier: verifier) == .expired)
        #expect(verify(Fixture.hs(), verifier: verifier, now: now) == nil)
    }

    @Test func algorithmStaysPinnedByTheKey() {
        let verifier = Fixture.verifier(cacheCapacity: 0)
        #expect(verify(Fixture.hs(), verifier: verifier) == nil)
        // An HS256 header naming the ES256 key, signed with that key's public point as a secret:
        // refused whether or not the HS256 header of another key was remembered.
        let confused = Fixture.hs(#"{"alg":"HS256","kid":"es1"}"#, secret: Array(Fixture.esKey.publicKey.x963Representation))
        #expect(verify(confused, verifier: verifier) == .algorithmMismatch)
        #expect(verify(Fixture.es(#"{"alg":"ES256","kid":"hs1"}"#), verifier: verifier) == .algorithmMismatch)
    }

    @Test func bounded() {
        let verifier = Fixture.verifier(cacheCapacity: 0)
        for index in 0..<(KnownHeaders.capacity + 10) {
            #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"hs1","n":\#(index)}"#), verifier: verifier) == nil)
        }
        // Full: new headers still verify (parsed every time), none is remembered beyond the bound.
        let extra = #"{"alg":"HS256","kid":"hs2","n":-1}"#
        #expect(verify(Fixture.hs(extra, secret: Fixture.hsSecret2), verifier: verifier) == nil)
        #expect(verifier.knownHeaders.named(by: ArraySlice(Fixture.b64(extra).utf8)) == nil)
        #expect(verify(Fixture.hs(extra, secret: Fixture.hsSecret2), verifier: verifier) == nil)
    }
}
