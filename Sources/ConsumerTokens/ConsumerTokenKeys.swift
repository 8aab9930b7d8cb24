import Crypto

/// The keys consumer tokens may be signed with, from `CONSUMER_TOKEN_KEYS` (HS256 secrets) and the
/// file `CONSUMER_TOKEN_JWKS` names (ES256 public keys). Each key id names exactly one key of one
/// kind, and the kind pins the algorithm: a token naming an HS256 key must say `HS256`, one naming
/// an ES256 key `ES256` (so no token can make us use a public key as an HMAC secret).
///
/// Parsing refuses a bad configuration as a whole, never skipping an entry: a key that silently
/// drops out turns into every token it signed being refused, in production, with the reason buried
/// in a startup warning. The errors name the entry (its position and key id), never a secret.
public struct ConsumerTokenKeys: Sendable {
    /// Kept as bytes: swift-crypto's key types are not `Sendable` (apple/swift-crypto#150), and
    /// rebuilding one costs a µs or so, against tens for an ES256 verification. This way no
    /// `@unchecked Sendable` is needed.
    enum Key: Sendable {
        /// The HMAC secret.
        case hs256([UInt8])
        /// The public key's uncompressed SEC 1 point (0x04 || x || y), checked on the curve.
        case es256([UInt8])
    }

    /// Key id → key. Key ids are visible ASCII (checked when parsing), so lookups compare bytes.
    let keys: [String: Key]

    /// The shortest HS256 secret accepted: 256 bits, the size of the HMAC (RFC 7518 §3.2).
    public static let minimumSecretBytes = 32
    /// A JWKS file larger than this is refused before parsing (a key is about 200 bytes).
    public static let maximumJWKSBytes = 1 << 20

    /// - Parameters:
    ///   - hs256: `CONSUMER_TOKEN_KEYS`: `kid:secret[,kid:secret...]`, each secret base64url (no
    ///     padding) of at least 32 bytes; spaces around an entry are ignored. nil, empty or only
    ///     spaces: no HS256 keys (an empty entry between commas is refused).
    ///   - jwksJSON: the contents of the `CONSUMER_TOKEN_JWKS` file, or nil when it is not set.
    public init(hs256: String?, jwksJSON: [UInt8]?) throws(ConsumerTokenKeysError) {
        var keys: [String: Key] = [:]
        if let hs256, !hs256.utf8.allSatisfy({ $0 == 0x20 }) {
            for (offset, entry) in hs256.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).enumerated() {
                let (kid, key) = try Self.parseSecret(Array(entry), position: offset + 1)
                guard keys.updateValue(.hs256(key), forKey: kid) == nil else {
                    throw .init(.duplicateKeyId, source: .keys, entry: offset + 1, kid: kid)
                }
            }
        }
        if let jwksJSON {
            for (position, kid, key) in try Self.parseJWKS(jwksJSON) {
                guard keys.updateValue(.es256(key), forKey: kid) == nil else {
                    throw .init(.duplicateKeyId, source: .jwks, entry: position, kid: kid)
                }
            }
        }
        self.keys = keys
    }

    /// No key at all: token verification cannot accept anything.
    public var isEmpty: Bool { keys.isEmpty }
    /// How many keys of each kind (for a startup log line).
    public var hs256Count: Int { keys.values.count { if case .hs256 = $0 { true } else { false } } }
    public var es256Count: Int { keys.values.count { if case .es256 = $0 { true } else { false } } }
    /// The configured key ids, sorted (not secret: tokens carry them in the clear).
    public var keyIds: [String] { keys.keys.sorted() }

    /// One `kid:secret` entry of `CONSUMER_TOKEN_KEYS`.
    private static func parseSecret(_ entry: [UInt8], position: Int) throws(ConsumerTokenKeysError) -> (String, [UInt8]) {
        guard let first = entry.firstIndex(where: { $0 != 0x20 }), let last = entry.lastIndex(where: { $0 != 0x20 }) else {
            throw .init(.emptyEntry, source: .keys, entry: position)
        }
        let bytes = entry[first...last]
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { throw .init(.missingSeparator, source: .keys, entry: position) }
        let kidBytes = bytes[..<colon]
        guard isValidKeyId(kidBytes) else { throw .init(.invalidKeyId, source: .keys, entry: position) }
        let kid = String(decoding: kidBytes, as: UTF8.self)
        guard let secret = Base64URL.decode(bytes[(colon + 1)...]) else {
            throw .init(.secretNotBase64url, source: .keys, entry: position, kid: kid)
        }
        guard secret.count >= minimumSecretBytes else { throw .init(.secretTooShort, source: .keys, entry: position, kid: kid) }
        return (kid, secret)
    }

    /// Key ids: 1 to 128 visible ASCII characters other than `,` and `:` (the separators of
    /// `CONSUMER_TOKEN_KEYS`; the same rule for JWKS keeps one namespace).
    static func isValidKeyId(_ kid: some Collection<UInt8>) -> Bool {
        guard !kid.isEmpty, kid.count <= 128 else { return false }
        return kid.allSatisfy { $0 >= 0x21 && $0 <= 0x7E && $0 != UInt8(ascii: ",") && $0 != UInt8(ascii: ":") }
    }

    /// RFC 7517: `{"keys": [{"kty":"EC","crv":"P-256","kid":..,"x":..,"y":..}, ...]}`. Every entry
    /// must be a P-256 signature verification key: any other kind is refused, not skipped.
    private static func parseJWKS(_ json: [UInt8]) throws(ConsumerTokenKeysError) -> [(Int, String, [UInt8])] {
        guard json.count <= maximumJWKSBytes else { throw .init(.jwksTooLarge, source: .jwks) }
        guard let document = JSONValue.parseObject(json) else { throw .init(.jwksNotJSON, source: .jwks) }
        guard case .array(let entries)? = document["keys"], !entries.isEmpty else { throw .init(.jwksWithoutKeys, source: .jwks) }
        var result: [(Int, String, [UInt8])] = []
        for (offset, entry) in entries.enumerated() {
            let position = offset + 1
            guard case .object(let members) = entry else { throw .init(.jwkNotObject, source: .jwks, entry: position) }
            guard case .string(let kid)? = members["kid"], isValidKeyId(kid.utf8) else {
                throw .init(.invalidKeyId, source: .jwks, entry: position)
            }
            func fail(_ reason: ConsumerTokenKeysError.Reason) -> ConsumerTokenKeysError {
                .init(reason, source: .jwks, entry: position, kid: kid)
            }
            guard members["kty"] == .string("EC") else { throw fail(.unsupportedKeyType) }
            guard members["crv"] == .string("P-256") else { throw fail(.unsupportedCurve) }
            // A private key has no business in a verification key file: refusing it makes the
            // operator notice that the private half leaked into configuration.
            guard members["d"] == nil else { throw fail(.privateKeyMaterial) }
            if let use = members["use"], use != .string("sig") { throw fail(.notForSignatures) }
            if let alg = members["alg"], alg != .string("ES256") { throw fail(.algorithmNotES256) }
            if let operations = members["key_ops"] {
                guard case .array(let list) = operations, list.contains(.string("verify")) else { throw fail(.notForSignatures) }
            }
            guard case .string(let x)? = members["x"], case .string(let y)? = members["y"],
                let xBytes = Base64URL.decode(x.utf8), let yBytes = Base64URL.decode(y.utf8),
                xBytes.count == 32, yBytes.count == 32
            else { throw fail(.invalidCoordinates) }
            // The uncompressed SEC 1 point; swift-crypto refuses one that is not on the curve.
            let point = [0x04] + xBytes + yBytes
            guard (try? P256.Signing.PublicKey(x963Representation: point)) != nil else { throw fail(.pointNotOnCurve) }
            result.append((position, kid, point))
        }
        return result
    }
}

/// Why a key configuration was refused. The description names the entry and its key id (public
/// in every token), never the secret.
public struct ConsumerTokenKeysError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        case emptyEntry = "empty entry"
        case missingSeparator = "entry is not kid:secret"
        case invalidKeyId = "key id missing or not 1 to 128 visible ASCII characters other than ',' and ':'"
        case secretNotBase64url = "secret is not base64url without padding"
        case secretTooShort = "secret is shorter than 32 bytes"
        case duplicateKeyId = "key id used twice"
        case jwksTooLarge = "JWKS file larger than 1 MiB"
        case jwksNotJSON = "JWKS is not a strict JSON object (malformed, or a duplicate member)"
        case jwksWithoutKeys = "JWKS has no non-empty \"keys\" array"
        case jwkNotObject = "JWKS entry is not an object"
        case unsupportedKeyType = "kty is not EC"
        case unsupportedCurve = "crv is not P-256"
        case privateKeyMaterial = "entry holds a private key (d)"
        case notForSignatures = "use or key_ops does not allow signature verification"
        case algorithmNotES256 = "alg is present and not ES256"
        case invalidCoordinates = "x or y is not base64url of 32 bytes"
        case pointNotOnCurve = "x, y is not a point on P-256"
    }

    /// Which setting the error is about.
    public enum Source: String, Sendable {
        case keys = "CONSUMER_TOKEN_KEYS"
        case jwks = "CONSUMER_TOKEN_JWKS"
    }

    public let reason: Reason
    public let source: Source
    /// 1-based position of the entry (in `CONSUMER_TOKEN_KEYS` or the JWKS `keys` array), if any.
    public let entry: Int?
    public let kid: String?

    init(_ reason: Reason, source: Source, entry: Int? = nil, kid: String? = nil) {
        self.reason = reason
        self.source = source
        self.entry = entry
        self.kid = kid
    }

    public var description: String {
        var text = "\(source.rawValue): \(reason.rawValue)"
        if let entry { text += " (entry \(entry)" + (kid.map { ", kid \($0)" } ?? "") + ")" }
        return text
    }
}
