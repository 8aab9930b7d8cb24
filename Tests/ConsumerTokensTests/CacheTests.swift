import Crypto
import Testing

@testable import ConsumerTokens

/// The verified-token cache: hits are exactly as good as a verification, expired tokens are never
/// answered from it, refusals never enter it, and it stays within its bound.
@Suite struct CacheTests {
    let now = Fixture.now

    @Test func hitReturnsTheSameConsumer() throws {
        let verifier = Fixture.verifier()
        let token = Fixture.es()
        let first = try verifier.verify(token, nowSeconds: now).get()
        #expect(verifier.cache?.count == 1)
        let second = try verifier.verify(token, nowSeconds: now + 1).get()
        #expect(first == second && second.consumerId == "alice")
        #expect(verifier.cache?.count == 1)
        // A copy of the verifier shares its cache (the same keys, so the same answers).
        let copy = verifier
        #expect(try copy.verify(token, nowSeconds: now).get() == first)
    }

    @Test func hitIsReallyAHit() throws {
        // Prove the second answer came from the cache: a verifier whose cache holds a token's
        // digest answers it without checking the signature. (Only this test can plant an entry.)
        let verifier = Fixture.verifier()
        let forged = Fixture.es(key: Fixture.strangerKey)
        #expect(verify(forged, verifier: verifier) == .badSignature)
        verifier.cache?.insert(Claims(subject: "planted", expiresAt: now + 60), for: key(forged))
        #expect(try verifier.verify(forged, nowSeconds: now).get().consumerId == "planted")
    }

    @Test func expiredEntryNeverReturned() {
        let verifier = Fixture.verifier()
        let token = Fixture.es(Fixture.esHeader, Fixture.claims(exp: String(now + 10)))
        #expect(verify(token, verifier: verifier) == nil)
        #expect(verifier.cache?.count == 1)
        // The entry is still there, but its time is checked on every hit.
        #expect(verify(token, verifier: verifier, now: now + 39) == nil)
        #expect(verify(token, verifier: verifier, now: now + 40) == .expired)
        #expect(verify(token, verifier: verifier, now: .max) == .expired)
        // nbf and iat the same, for a clock that goes back.
        let notBefore = Fixture.es(Fixture.esHeader, Fixture.claims(#""nbf":\#(now),"iat":\#(now - 100)"#))
        #expect(verify(notBefore, verifier: verifier) == nil)
        #expect(verify(notBefore, verifier: verifier, now: now - 31) == .notYetValid)
        let issued = Fixture.es(Fixture.esHeader, Fixture.claims(#""iat":\#(now)"#))
        #expect(verify(issued, verifier: verifier) == nil)
        #expect(verify(issued, verifier: verifier, now: now - 31) == .issuedInFuture)
    }

    @Test func refusalsNotCached() {
        let verifier = Fixture.verifier()
        #expect(verify(Fixture.es(key: Fixture.strangerKey), verifier: verifier) == .badSignature)
        #expect(verify(Fixture.es(Fixture.esHeader, Fixture.claims(sub: "1")), verifier: verifier) == .invalidSubject)
        // Expired when first seen: refused, and not remembered either.
        #expect(verify(Fixture.es(Fixture.esHeader, Fixture.claims(exp: "1")), verifier: verifier) == .expired)
        #expect(verify(Fixture.es(Fixture.esHeader, Fixture.claims(#""aud":"x""#)), verifier: Fixture.verifier(audience: "y")) == .audienceMismatch)
        #expect(verify(Fixture.hs(secret: Fixture.hsSecret2), verifier: verifier) == .badSignature)
        #expect(verify(Fixture.hs(#"{"alg":"HS256","kid":"es1"}"#), verifier: verifier) == .algorithmMismatch)
        #expect(verifier.cache?.count == 0)
    }

    @Test func hs256VerifiedEveryTime() throws {
        // HS256 tokens bypass the cache (an HMAC costs about what a miss and an insert do).
        let verifier = Fixture.verifier()
        let token = Fixture.hs()
        let first = try verifier.verify(token, nowSeconds: now).get()
        #expect(try verifier.verify(token, nowSeconds: now).get() == first)
        #expect(verifier.cache?.count == 0)
        #expect(verify(token, verifier: verifier, now: now + 630) == .expired)
        // Not even looked up: a planted entry for a forged HS256 token is never answered.
        let forged = Fixture.hs(secret: Fixture.hsSecret2)
        verifier.cache?.insert(Claims(subject: "planted", expiresAt: now + 60), for: key(forged))
        #expect(verify(forged, verifier: verifier) == .badSignature)
    }

    @Test func perVerifierAfterRotation() throws {
        let token = Fixture.es()
        let old = Fixture.verifier()
        #expect(verify(token, verifier: old) == nil)
        // es1 retired: a new verifier, with its own empty cache, refuses the token.
        let point = Array(Fixture.esKey2.publicKey.x963Representation)
        let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","kid":"es2","x":"\#(Fixture.b64(point[1..<33]))","y":"\#(Fixture.b64(point[33..<65]))"}]}"#
        let rotated = ConsumerTokenVerifier(keys: try ConsumerTokenKeys(hs256: nil, jwksJSON: Array(jwks.utf8)))
        #expect(rotated.cache?.count == 0)
        #expect(verify(token, verifier: rotated) == .unknownKey)
    }

    @Test func disabled() {
        let verifier = Fixture.verifier(cacheCapacity: 0)
        #expect(verifier.cache == nil)
        #expect(verify(Fixture.es(), verifier: verifier) == nil)
        #expect(verify(Fixture.es(), verifier: verifier) == nil)
    }

    @Test func boundHoldsUnderManyDistinctTokens() {
        let cache = VerifiedTokenCache(capacity: 16_384)
        #expect(cache.capacity == 16_384)
        var most = 0
        func key(_ index: Int) -> CachedToken {
            var bytes = Array("token-".utf8)
            withUnsafeBytes(of: index) { bytes += $0 }
            // A signature's bytes are unpredictable: SHA-256 stands in for one.
            return CachedToken(bytes, signature: Array(SHA256.hash(data: bytes)))
        }
        for index in 0..<100_000 {
            cache.insert(Claims(subject: "c\(index)", expiresAt: 1), for: key(index))
            if index % 1000 == 0 { most = max(most, cache.count) }
        }
        #expect(most <= cache.capacity)
        // Full, or nearly (a set can only be left with a hole if no token landed in it).
        #expect(cache.count <= 16_384 && cache.count >= 16_000)
        // The newest entries are still there; the oldest are gone.
        #expect(cache.claims(for: key(99_999))?.subject == "c99999")
        #expect((0..<100).allSatisfy { cache.claims(for: key($0)) == nil })
    }

    @Test func tokensInUseSurviveAFloodOfNewOnes() {
        // A token looked up after every 100 new ones stays cached through 20,000 of them (keys
        // with SHA-256s standing in for signatures: the same sets every run).
        let cache = VerifiedTokenCache(capacity: 16_384)
        func key(_ name: String) -> CachedToken {
            let bytes = Array(name.utf8)
            return CachedToken(bytes, signature: Array(SHA256.hash(data: bytes)))
        }
        cache.insert(Claims(subject: "keep", expiresAt: 1), for: key("keep"))
        for index in 0..<20_000 {
            cache.insert(Claims(subject: "c\(index)", expiresAt: 1), for: key("c\(index)"))
            if index % 100 == 0 { #expect(cache.claims(for: key("keep"))?.subject == "keep") }
        }
        #expect(cache.count <= 16_384)
    }

    @Test func twoWaysASet() {
        // A capacity of 2: one set of two. The entry used last survives a third token.
        let verifier = Fixture.verifier(cacheCapacity: 2)
        let tokens = (0..<3).map { Fixture.es(Fixture.esHeader, Fixture.claims(sub: "\"c\($0)\"")) }
        #expect(verify(tokens[0], verifier: verifier) == nil)
        #expect(verify(tokens[1], verifier: verifier) == nil)
        #expect(verifier.cache?.count == 2)
        #expect(verifier.cache?.claims(for: key(tokens[0])) != nil)  // now used last
        #expect(verify(tokens[2], verifier: verifier) == nil)
        #expect(verifier.cache?.count == 2)
        #expect(verifier.cache?.claims(for: key(tokens[0])) != nil)
        #expect(verifier.cache?.claims(for: key(tokens[1])) == nil)
        #expect(verifier.cache?.claims(for: key(tokens[2])) != nil)
        // The same token verified again takes its own place, not the other's.
        #expect(verify(tokens[2], verifier: verifier) == nil)
        #expect(verifier.cache?.claims(for: key(tokens[0])) != nil)
    }

    @Test func concurrentUse() async {
        let verifier = Fixture.verifier(cacheCapacity: 16)
        let tokens = (0..<8).map { Fixture.es(Fixture.esHeader, Fixture.claims(sub: "\"c\($0)\"")) }
        let now = self.now
        let failures = await withTaskGroup(of: Int.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var failures = 0
                    for round in 0..<50 {
                        let token = tokens[(worker + round) % tokens.count]
                        if case .failure = verifier.verify(token, nowSeconds: now) { failures += 1 }
                    }
                    return failures
                }
            }
            return await group.reduce(0, +)
        }
        #expect(failures == 0)
        #expect(verifier.cache!.count <= 16)
    }

    @Test func aCopiedSignatureIsNotAHit() throws {
        // Another token with a cached token's signature shares its hash, never its entry.
        let verifier = Fixture.verifier()
        let token = Fixture.es()
        #expect(verify(token, verifier: verifier) == nil)
        let signature = token.split(separator: ".")[2]
        let other = Fixture.es(Fixture.esHeader, Fixture.claims(sub: #""mallory""#))
        let grafted = other.split(separator: ".")[0...1].joined(separator: ".") + "." + signature
        #expect(verify(grafted, verifier: verifier) == .badSignature)
        #expect(verifier.cache?.count == 1)
    }

    @Test func longTokensCachedByTheirDigest() throws {
        let verifier = Fixture.verifier()
        let long = Fixture.es(Fixture.esHeader, Fixture.claims(#""pad":"\#(String(repeating: "x", count: 1000))""#))
        #expect(long.utf8.count > VerifiedTokenCache.maximumTokenBytes)
        #expect(verify(long, verifier: verifier) == nil)
        #expect(verifier.cache?.count == 1)
        let entry = key(long)
        #expect(entry.hashed && entry.bytes.count == 32)
        #expect(verifier.cache?.claims(for: entry)?.subject == "alice")
        // A short token whose bytes are that digest is another entry.
        #expect(verifier.cache?.claims(for: CachedToken(entry.bytes, signature: Base64URL.decode(long.split(separator: ".").last!.utf8)!)) == nil)
    }

    /// The cache's key for a token: its bytes and its decoded signature.
    func key(_ token: String) -> CachedToken {
        CachedToken(Array(token.utf8), signature: Base64URL.decode(token.split(separator: ".").last!.utf8)!)
    }
}
