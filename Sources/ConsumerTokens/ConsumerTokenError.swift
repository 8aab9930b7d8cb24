/// Why a consumer token was refused: one type for every refusal, which the gateway answers with
/// 401 `invalid_token` and `WWW-Authenticate: Bearer` whatever the reason. The reason is for logs
/// and metrics (its raw value is a stable label); neither it nor the description ever holds the
/// token, a claim's value or a key.
public struct ConsumerTokenError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        /// No `Authorization: Bearer` token, or an empty one.
        case missing
        /// Longer than 4096 bytes.
        case tooLong = "too_long"
        /// Not three canonical unpadded base64url parts.
        case malformed
        /// The header is not a strict JSON object (duplicate members included), or its `alg` or
        /// `kid` is missing or not a string.
        case malformedHeader = "malformed_header"
        /// `alg` other than HS256 and ES256 (`none`, `RS256`, `HS512`, ...).
        case unsupportedAlgorithm = "unsupported_algorithm"
        /// `kid` names no configured key.
        case unknownKey = "unknown_key"
        /// `alg` is not the algorithm of the key `kid` names (HS256 on an ES256 key or the reverse).
        case algorithmMismatch = "algorithm_mismatch"
        /// A `crit` header: we understand no extension, so we may accept none (RFC 7515 §4.1.11).
        case criticalHeader = "critical_header"
        /// The signature has the wrong length or does not verify.
        case badSignature = "bad_signature"
        /// The payload is not a strict JSON object.
        case malformedClaims = "malformed_claims"
        /// `sub` missing, not a string, or not a consumer id (1 to 128 of `[A-Za-z0-9._:@-]`).
        case invalidSubject = "invalid_subject"
        /// `exp` missing, or `exp`, `nbf` or `iat` not a non-negative number up to year 9999.
        case invalidTime = "invalid_time"
        /// `exp` is past (beyond the leeway).
        case expired
        /// `nbf` is in the future (beyond the leeway).
        case notYetValid = "not_yet_valid"
        /// `iat` is in the future (beyond the leeway).
        case issuedInFuture = "issued_in_future"
        /// An audience is configured and `aud` is missing, of the wrong type, or does not hold it.
        case audienceMismatch = "audience_mismatch"
    }

    public let reason: Reason

    public init(_ reason: Reason) { self.reason = reason }

    public var description: String { "consumer token refused: \(reason.rawValue)" }
}

/// What a valid token says: who the consumer is and until when the token holds.
public struct VerifiedConsumer: Sendable, Hashable {
    /// `sub`, a valid consumer id.
    public let consumerId: String
    /// `exp`, in seconds since 1970 (a fraction floored).
    public let expiresAt: Int64

    public init(consumerId: String, expiresAt: Int64) {
        self.consumerId = consumerId
        self.expiresAt = expiresAt
    }
}
