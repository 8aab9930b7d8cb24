import Synchronization

/// Tokens that verified, so that a consumer's next request with the same token skips the P-256
/// verification (ES256: about 40 µs, the largest cost of a request) or the HMAC and the claims'
/// reading (HS256), and a first use costs no more than a dictionary insert.
///
/// - Keyed by the token itself (`CachedToken`), hashed by its signature's first 32 bytes: they
///   are already decoded, and as output of HMAC-SHA256 or ECDSA's R as unpredictable as any hash
///   of the token (no SHA-256 of it is needed; that was about 0.7 µs a request). Equality is the
///   whole token's bytes, so a hit means these exact bytes verified before: another token with a
///   copied signature only shares a bucket, never an entry.
/// - Only tokens of at most `maximumTokenBytes` are kept (longer ones are verified each time), so
///   the cache holds at most `capacity` × 1 KiB of tokens (16 MiB at the default; a typical token
///   is 200-300 bytes).
/// - Only successes go in, and only after every check, so no stream of invalid tokens, however
///   varied, can evict anything: they are refused before they reach the cache. Filling it takes
///   distinct valid tokens, which only the key holders can make.
/// - A hit still has its times checked (`exp`, `nbf`, `iat` against the caller's clock), so an
///   entry never outlives its token.
/// - Owned by one verifier, whose keys and audience never change: rotating keys means a new
///   verifier, hence an empty cache, and no token verified under a retired key is answered from it.
/// - Bounded by two generations of at most `capacity / 2` entries: inserts go to the current one;
///   when it is full the previous one is dropped and the current one takes its place. A hit in the
///   previous generation moves to the current one, so tokens in use survive. O(1) per operation,
///   amortized (dropping a generation frees its entries at once).
public final class VerifiedTokenCache: Sendable {
    public static let defaultCapacity = 16_384
    /// The longest token kept.
    public static let maximumTokenBytes = 1024

    private struct Generations {
        var current: [CachedToken: Claims] = [:]
        var previous: [CachedToken: Claims] = [:]
    }

    private let generations = Mutex(Generations())
    private let generationCapacity: Int

    /// `capacity`: the most entries held at once (at least 2).
    public init(capacity: Int = VerifiedTokenCache.defaultCapacity) {
        generationCapacity = max(1, capacity / 2)
    }

    /// Entries now held (both generations).
    public var count: Int { generations.withLock { $0.current.count + $0.previous.count } }

    /// The most entries ever held at once.
    public var capacity: Int { generationCapacity * 2 }

    func claims(for token: CachedToken) -> Claims? {
        generations.withLock { generations in
            if let claims = generations.current[token] { return claims }
            guard let claims = generations.previous.removeValue(forKey: token) else { return nil }
            Self.insert(claims, for: token, into: &generations, capacity: generationCapacity)
            return claims
        }
    }

    func insert(_ claims: Claims, for token: CachedToken) {
        guard token.bytes.count <= Self.maximumTokenBytes else { return }
        generations.withLock { Self.insert(claims, for: token, into: &$0, capacity: generationCapacity) }
    }

    private static func insert(_ claims: Claims, for token: CachedToken, into generations: inout Generations, capacity: Int) {
        if generations.current.count >= capacity, generations.current[token] == nil {
            generations.previous = generations.current
            generations.current = [:]
            generations.current.reserveCapacity(capacity)
        }
        generations.current[token] = claims
    }
}

/// A token as the cache's key: its bytes (compared whole) and its signature's first 32 bytes
/// (hashed). `Sendable` and cheap to hash.
struct CachedToken: Hashable, Sendable {
    let bytes: [UInt8]
    let words: (UInt64, UInt64, UInt64, UInt64)

    /// `signature`: the token's decoded signature (fewer than 32 bytes are zero-padded).
    init(_ token: [UInt8], signature: [UInt8]) {
        bytes = token
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &words) { words in
            signature.withUnsafeBytes { words.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(32))) }
        }
        self.words = words
    }

    static func == (left: CachedToken, right: CachedToken) -> Bool { left.words == right.words && left.bytes == right.bytes }

    func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
    }
}
