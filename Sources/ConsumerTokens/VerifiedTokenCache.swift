import Crypto
import Synchronization

/// Tokens that verified, so that a consumer's next request with the same token skips the P-256
/// verification (ES256: about 40 µs, the largest cost of a request) or the HMAC and the claims'
/// parsing (HS256: about 3 µs, against under 1 µs for a hit; measured by BenchTokens).
///
/// - Keyed by SHA-256 of the whole token: 32 bytes an entry instead of up to 4096, and a hit
///   means these exact bytes verified before (a collision would need a second preimage).
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

    private struct Generations {
        var current: [TokenDigest: Claims] = [:]
        var previous: [TokenDigest: Claims] = [:]
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

    func claims(for digest: TokenDigest) -> Claims? {
        generations.withLock { generations in
            if let claims = generations.current[digest] { return claims }
            guard let claims = generations.previous.removeValue(forKey: digest) else { return nil }
            Self.insert(claims, for: digest, into: &generations, capacity: generationCapacity)
            return claims
        }
    }

    func insert(_ claims: Claims, for digest: TokenDigest) {
        generations.withLock { Self.insert(claims, for: digest, into: &$0, capacity: generationCapacity) }
    }

    private static func insert(_ claims: Claims, for digest: TokenDigest, into generations: inout Generations, capacity: Int) {
        if generations.current.count >= capacity, generations.current[digest] == nil {
            generations.previous = generations.current
            generations.current = [:]
            generations.current.reserveCapacity(capacity)
        }
        generations.current[digest] = claims
    }
}

/// SHA-256 of a token, as four words: a `Sendable`, cheaply hashed dictionary key (swift-crypto's
/// digest type is not `Sendable`).
struct TokenDigest: Hashable, Sendable {
    let words: (UInt64, UInt64, UInt64, UInt64)

    init(_ token: [UInt8]) {
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        SHA256.hash(data: token).withUnsafeBytes { digest in
            withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: digest) }
        }
        self.words = words
    }

    static func == (left: TokenDigest, right: TokenDigest) -> Bool { left.words == right.words }

    func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
    }
}
