import Crypto
import Synchronization

/// ES256 tokens that verified, so that a consumer's next request with the same token skips the
/// P-256 verification (about 40 µs, the largest cost of a request), and a first use costs no
/// more than a dictionary insert. (HS256 tokens are verified every time: ConsumerTokenVerifier.)
///
/// - Keyed by the token itself (`CachedToken`), hashed by its signature's first 32 bytes: they
///   are already decoded, and as ECDSA's R as unpredictable as any hash
///   of the token (no SHA-256 of it is needed; that was about 0.7 µs a request). Equality is the
///   whole token's bytes, so a hit means these exact bytes verified before: another token with a
///   copied signature only shares a bucket, never an entry.
/// - A token of at most `maximumTokenBytes` is kept as its bytes; a longer one (an identity
///   provider's access token with many claims) as the SHA-256 of its bytes, so an entry holds at
///   most 1 KiB and the table at most `capacity` × 1 KiB (16 MiB at the default; a typical token
///   is 200-300 bytes).
/// - Only successes go in, and only after every check, so no stream of invalid tokens, however
///   varied, can evict anything: they are refused before they reach the cache. Filling it takes
///   distinct valid tokens, which only the key holders can make.
/// - A hit still has its times checked (`exp`, `nbf`, `iat` against the caller's clock), so an
///   entry never outlives its token.
/// - Owned by one verifier, whose keys and audience never change: rotating keys means a new
///   verifier, hence an empty cache, and no token verified under a retired key is answered from it.
/// - A fixed table of `capacity` entries in sets of two, the set chosen by the signature's
///   first word (unpredictable, so no hashing): a lookup reads one set, an insert writes into it,
///   replacing the entry of the two not used last. No allocation but the entry's, no rehashing,
///   no generation to drop: a first use (every request of a consumer with a new token) costs a
///   lookup in one set and a write, about what the dictionary it replaced cost in lookups alone.
///   A token in use survives unless two newer tokens land in its set between two of its uses.
public final class VerifiedTokenCache: Sendable {
    public static let defaultCapacity = 16_384
    /// The longest token kept as its bytes (a longer one is kept as its SHA-256).
    public static let maximumTokenBytes = 1024

    private struct Entry {
        var token: CachedToken
        var claims: Claims
    }

    /// One set: two entries, and which of them was used last.
    private struct Set {
        var first: Entry?
        var second: Entry?
        var secondUsedLast = false
    }

    private let sets: Mutex<[Set]>
    private let setMask: UInt64

    /// `capacity`: the most entries held at once, rounded up to a power of two (at least 2).
    public init(capacity: Int = VerifiedTokenCache.defaultCapacity) {
        var setCount = 1
        while setCount * 2 < capacity { setCount *= 2 }
        sets = Mutex([Set](repeating: Set(), count: setCount))
        setMask = UInt64(setCount - 1)
    }

    /// Entries now held.
    public var count: Int { sets.withLock { $0.reduce(0) { $0 + ($1.first == nil ? 0 : 1) + ($1.second == nil ? 0 : 1) } } }

    /// The most entries ever held at once.
    public var capacity: Int { Int(setMask + 1) * 2 }

    func claims(for token: CachedToken) -> Claims? {
        let index = Int(token.words.0 & setMask)
        return sets.withLock { sets in
            if let entry = sets[index].first, entry.token == token {
                sets[index].secondUsedLast = false
                return entry.claims
            }
            if let entry = sets[index].second, entry.token == token {
                sets[index].secondUsedLast = true
                return entry.claims
            }
            return nil
        }
    }

    func insert(_ claims: Claims, for token: CachedToken) {
        let index = Int(token.words.0 & setMask)
        let entry = Entry(token: token, claims: claims)
        sets.withLock { sets in
            // Where the token already is (verified twice at once), else an empty place, else
            // over the entry used less recently.
            if sets[index].first?.token == token {
                sets[index].first = entry
                sets[index].secondUsedLast = false
            } else if sets[index].second?.token == token {
                sets[index].second = entry
                sets[index].secondUsedLast = true
            } else if sets[index].first == nil || (sets[index].second != nil && sets[index].secondUsedLast) {
                sets[index].first = entry
                sets[index].secondUsedLast = false
            } else {
                sets[index].second = entry
                sets[index].secondUsedLast = true
            }
        }
    }
}

/// A token as the cache's key: its bytes (compared whole; for a token longer than
/// `VerifiedTokenCache.maximumTokenBytes`, the SHA-256 of them) and its signature's first 32
/// bytes (the first word picks the set; all four are compared before the bytes).
struct CachedToken: Equatable, Sendable {
    /// The token, or the SHA-256 of a long one (`hashed`).
    let bytes: [UInt8]
    let hashed: Bool
    let words: (UInt64, UInt64, UInt64, UInt64)

    /// `signature`: the token's decoded signature (fewer than 32 bytes are zero-padded).
    init(_ token: [UInt8], signature: [UInt8]) {
        if token.count > VerifiedTokenCache.maximumTokenBytes {
            var hasher = SHA256()
            token.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            bytes = hasher.finalize().withUnsafeBytes { Array($0) }
            hashed = true
        } else {
            bytes = token
            hashed = false
        }
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &words) { words in
            signature.withUnsafeBytes { words.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(32))) }
        }
        self.words = words
    }

    static func == (left: CachedToken, right: CachedToken) -> Bool {
        left.words == right.words && left.hashed == right.hashed && left.bytes == right.bytes
    }
}
