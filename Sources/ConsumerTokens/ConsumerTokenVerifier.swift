import Crypto
import Synchronization

/// Verifies consumer tokens: JWTs in compact JWS form (RFC 7515, 7519), HS256 or ES256, with the
/// contract's rules ("Consumer identity (v2)"):
/// - at most 4096 bytes, exactly three canonical unpadded base64url parts, the first two JSON
///   objects with no duplicate member anywhere;
/// - header `alg` `HS256` or `ES256`, `kid` naming a configured key of that algorithm's kind
///   (the key pins the algorithm), no `crit`;
/// - the signature: 32 bytes of HMAC-SHA256 compared in constant time, or 64 bytes of raw R||S
///   P-256 ECDSA over SHA-256 (not DER); checked before the claims are even parsed;
/// - `sub` a consumer id, `exp` required and in the future, `nbf` and `iat` when present not in
///   the future, all with `leewaySeconds` of skew; `aud` holding the audience when one is set.
///
/// ES256 successes are cached (see `VerifiedTokenCache`): a consumer's next request with the same
/// token costs its split, its signature's decoding and a lookup instead of a P-256 verification
/// (about 40 µs). HS256 tokens are verified every time (an HMAC and the claims' reading cost
/// about what a cache miss and insert do; see BenchTokens for today's figures).
public struct ConsumerTokenVerifier: Sendable {
    public static let maximumTokenBytes = 4096

    let keys: ConsumerTokenKeys
    /// Each HS256 key's HMAC, keyed once here rather than on every token.
    let hmacs: [String: HMACPrototype]
    /// Header segments whose tokens verified, with the key they name (see `KnownHeaders`).
    let knownHeaders = KnownHeaders()
    let audience: [UInt8]?
    let leeway: Int64
    /// nil when caching is off.
    public let cache: VerifiedTokenCache?

    /// - Parameters:
    ///   - audience: `CONSUMER_TOKEN_AUDIENCE`; nil or empty: `aud` is not checked.
    ///   - leewaySeconds: clock skew allowed on `exp`, `nbf`, `iat`; 0 to 3600.
    ///   - cacheCapacity: the most tokens remembered as verified; 0 turns the cache off.
    public init(
        keys: ConsumerTokenKeys, audience: String? = nil, leewaySeconds: Int64 = 30, cacheCapacity: Int = VerifiedTokenCache.defaultCapacity
    ) {
        precondition((0...3600).contains(leewaySeconds), "leeway must be 0 to 3600 seconds")
        self.keys = keys
        var hmacs: [String: HMACPrototype] = [:]
        for (kid, key) in keys.keys { if case .hs256(let secret) = key { hmacs[kid] = HMACPrototype(secret: secret) } }
        self.hmacs = hmacs
        self.audience = audience.flatMap { $0.isEmpty ? nil : Array($0.utf8) }
        self.leeway = leewaySeconds
        self.cache = cacheCapacity > 0 ? VerifiedTokenCache(capacity: cacheCapacity) : nil
    }

    /// The token of an `Authorization` header value: `Bearer <token>`, the scheme in any case,
    /// one space, then a token with no space or tab in it. nil for anything else (no header, an
    /// other scheme, an empty token): refuse it as `.missing`.
    public static func bearer(_ header: String?) -> Substring? {
        guard var header else { return nil }
        // Over the contiguous UTF-8 (one pointer walk, not String.UTF8View's index checks).
        let valid = header.withUTF8 { bytes -> Bool in
            guard bytes.count > 7 else { return false }
            // ASCII letters compared with their case bit set; the space exactly.
            for (offset, letter) in "bearer".utf8.enumerated() where bytes[offset] | 0x20 != letter { return false }
            guard bytes[6] == 0x20 else { return false }
            return !bytes[7...].contains { $0 == 0x20 || $0 == 0x09 }
        }
        guard valid else { return nil }
        return Substring(header.utf8.dropFirst(7))
    }

    /// The consumer a token names, or why it is refused. `nowSeconds`: the caller's clock
    /// (seconds since 1970); any value is safe.
    public func verify(_ token: some StringProtocol, nowSeconds: Int64) -> Result<VerifiedConsumer, ConsumerTokenError> {
        verify(token.utf8, nowSeconds: nowSeconds)
    }

    public func verify(_ token: some Collection<UInt8>, nowSeconds: Int64) -> Result<VerifiedConsumer, ConsumerTokenError> {
        // Copy no more than one byte past the limit, whatever the caller hands us; at once from
        // contiguous storage (a native String's UTF-8 is), byte by byte only otherwise.
        let limit = Self.maximumTokenBytes + 1
        let bytes = token.withContiguousStorageIfAvailable { Array(UnsafeBufferPointer(rebasing: $0.prefix(limit))) } ?? Array(token.prefix(limit))
        return verify(bytes: bytes, now: nowSeconds)
    }

    /// `verify` on the token's bytes.
    func verify(bytes token: [UInt8], now: Int64) -> Result<VerifiedConsumer, ConsumerTokenError> {
        guard !token.isEmpty else { return .failure(.init(.missing)) }
        guard token.count <= Self.maximumTokenBytes else { return .failure(.init(.tooLong)) }
        guard let firstDot = token.firstIndex(of: UInt8(ascii: ".")),
            let secondDot = token[(firstDot + 1)...].firstIndex(of: UInt8(ascii: ".")),
            !token[(secondDot + 1)...].contains(UInt8(ascii: "."))
        else { return .failure(.init(.malformed)) }

        // The header says which key; the key says which algorithm. A header segment seen in a
        // token that verified is not parsed again: parsing is a pure function of its bytes.
        let headerSegment = token[..<firstDot]
        let named: KnownHeaders.Named
        var headerIsNew = false
        if let known = knownHeaders.named(by: headerSegment) {
            named = known
        } else {
            switch parseHeader(headerSegment) {
            case .success(let parsed): named = parsed
            case .failure(let error): return .failure(error)
            }
            headerIsNew = true
        }
        let (key, isHS256) = (named.key, named.isHS256)
        guard let signature = Base64URL.decode(token[(secondDot + 1)...]) else { return .failure(.init(.malformed)) }
        let signingInput = token[..<secondDot]

        // The key's algorithm, and its signature's exact length: 32 bytes of HMAC-SHA256 (a
        // truncated MAC is a weaker one); 64 bytes of R||S for ES256 (RFC 7518 §3.4), never DER.
        switch key {
        case .hs256:
            guard isHS256 else { return .failure(.init(.algorithmMismatch)) }
            guard signature.count == SHA256.byteCount else { return .failure(.init(.badSignature)) }
        case .es256:
            guard !isHS256 else { return .failure(.init(.algorithmMismatch)) }
            guard signature.count == 64 else { return .failure(.init(.badSignature)) }
        }

        // Seen and verified before, by this verifier: only the times need checking again. Only
        // ES256 tokens are cached: an HS256 verification (its HMAC and claims, ~2 µs) costs about
        // what a lookup that misses plus an insert cost on a gateway under load (~0.8 µs, the
        // table cold in memory), and a sale's crowd (more consumers than the cache's entries,
        // each polling and reserving in turn) would mostly miss; so it is simply done each time.
        var cached: CachedToken?
        if let cache, !isHS256 {
            let key = CachedToken(token, signature: signature)
            if let claims = cache.claims(for: key) { return result(claims, now: now) }
            cached = key
        }
        guard let payloadJSON = Base64URL.decode(token[(firstDot + 1)..<secondDot]) else { return .failure(.init(.malformed)) }

        switch key {
        case .hs256:
            guard let hmac = named.hmac, hmac.isValid(signature, for: signingInput) else { return .failure(.init(.badSignature)) }
        case .es256(let point):
            guard let publicKey = try? P256.Signing.PublicKey(x963Representation: point),
                let ecdsa = try? P256.Signing.ECDSASignature(rawRepresentation: signature),
                publicKey.isValidSignature(ecdsa, for: SHA256.hash(data: signingInput))
            else { return .failure(.init(.badSignature)) }
        }

        // Authentic: now the claims, in one pass when they have the usual flat shape.
        let claims: Claims
        switch FlatClaims.read(payloadJSON, audience: audience) ?? ClaimsReaders.full(payloadJSON, audience: audience) {
        case .success(let read): claims = read
        case .failure(let error): return .failure(error)
        }
        let verified = result(claims, now: now)
        // Cached only when valid now: a token refused for its times is refused before the cache
        // next time too, at the price of one more verification.
        if case .success = verified {
            if let cached { cache?.insert(claims, for: cached) }
            // A header of a token that verified whole (signed by a key holder, valid claims):
            // the next token with it skips its parsing.
            if headerIsNew { knownHeaders.insert(headerSegment, named) }
        }
        return verified
    }

    /// The key a header segment names: base64url of a JSON object with `alg` `HS256` or `ES256`,
    /// `kid` a configured key id, and no `crit`.
    private func parseHeader(_ segment: ArraySlice<UInt8>) -> Result<KnownHeaders.Named, ConsumerTokenError> {
        guard let headerJSON = Base64URL.decode(segment) else { return .failure(.init(.malformed)) }
        guard let header = JSONValue.parseObject(headerJSON), case .string(let alg)? = header["alg"] else {
            return .failure(.init(.malformedHeader))
        }
        let isHS256 = alg.utf8.elementsEqual("HS256".utf8)
        guard isHS256 || alg.utf8.elementsEqual("ES256".utf8) else { return .failure(.init(.unsupportedAlgorithm)) }
        guard case .string(let kid)? = header["kid"] else { return .failure(.init(.malformedHeader)) }
        // Key ids are visible ASCII, so this lookup is a byte comparison (Swift's String equality
        // would also match Unicode-equivalent spellings).
        guard ConsumerTokenKeys.isValidKeyId(kid.utf8), let key = keys.keys[kid] else { return .failure(.init(.unknownKey)) }
        guard header["crit"] == nil else { return .failure(.init(.criticalHeader)) }
        return .success(.init(kid: kid, key: key, isHS256: isHS256, hmac: hmacs[kid]))
    }

    private func result(_ claims: Claims, now: Int64) -> Result<VerifiedConsumer, ConsumerTokenError> {
        if let refusal = claims.timeRefusal(now: now, leeway: leeway) { return .failure(.init(refusal)) }
        return .success(VerifiedConsumer(consumerId: claims.subject, expiresAt: claims.expiresAt))
    }
}

/// HMAC-SHA256 keyed with one secret: the key's padding and its two first blocks computed once,
/// at startup, instead of for every token (about 0.6 µs of the 5 an HS256 verification cost).
package final class HMACPrototype: @unchecked Sendable {
    // @unchecked Sendable: `keyed` is set in init and never mutated; each use works on a copy
    // (swift-crypto's HMAC is a value type: updating a copy never changes the original).
    private let keyed: HMAC<SHA256>

    package init(secret: [UInt8]) { keyed = HMAC(key: SymmetricKey(data: secret)) }

    /// Whether `mac` is this key's HMAC of `message`, compared in constant time (a loop over all
    /// 32 bytes, whatever they hold); a MAC of another length is refused.
    package func isValid(_ mac: [UInt8], for message: ArraySlice<UInt8>) -> Bool {
        // As a raw buffer: swift-crypto's generic entry points are not specialized for our types,
        // and a slice through `DataProtocol` costs a metadata lookup per call.
        message.withUnsafeBytes { isValid(mac, for: $0) }
    }

    package func isValid(_ mac: [UInt8], for message: UnsafeRawBufferPointer) -> Bool {
        var hmac = keyed
        hmac.update(data: message)
        return hmac.finalize().withUnsafeBytes { code in constantTimeEquals(code, mac) }
    }

    /// Whether two byte strings are equal, in time that depends only on their lengths (which
    /// are public here: a MAC's length is fixed).
    private func constantTimeEquals(_ left: UnsafeRawBufferPointer, _ right: [UInt8]) -> Bool {
        guard left.count == right.count else { return false }
        var difference: UInt8 = 0
        for index in 0..<left.count { difference |= left[index] ^ right[index] }
        return difference == 0
    }

    /// This key's HMAC of `message`.
    package func code(for message: some Sequence<UInt8>) -> [UInt8] {
        var hmac = keyed
        hmac.update(data: Array(message))
        return Array(hmac.finalize())
    }
}

/// Header segments (the base64url text before the first dot) of tokens that verified, with the
/// key each names, so that the next token with the same header skips its decoding and parsing.
/// Only a segment whose token verified whole goes in, so filling it takes a key; it holds
/// at most `capacity` (an issuer signs with one header per key, or a few) and, full, takes no more
/// (a miss only costs the parse). A verifier's keys never change, so an entry never goes stale.
final class KnownHeaders: Sendable {
    struct Named: Sendable {
        let kid: String
        let key: ConsumerTokenKeys.Key
        let isHS256: Bool
        /// The key's keyed HMAC, for an HS256 key.
        let hmac: HMACPrototype?
    }

    static let capacity = 16
    private let entries = Mutex<[(segment: [UInt8], named: Named)]>([])

    func named(by segment: ArraySlice<UInt8>) -> Named? {
        entries.withLock { entries in entries.first { $0.segment.count == segment.count && $0.segment.elementsEqual(segment) }?.named }
    }

    func insert(_ segment: ArraySlice<UInt8>, _ named: Named) {
        entries.withLock { entries in
            guard entries.count < Self.capacity, !entries.contains(where: { $0.segment.elementsEqual(segment) }) else { return }
            entries.append((Array(segment), named))
        }
    }
}
