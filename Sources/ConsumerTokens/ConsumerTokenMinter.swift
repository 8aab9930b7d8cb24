public import Crypto

/// Makes consumer tokens, for development (a CLI subcommand) and tests: HS256 with a configured
/// secret, ES256 with a private key given here. What `mint` makes always verifies against the
/// same keys (it refuses a subject or lifetime the verifier would refuse); `sign` makes anything,
/// for tests of refusals.
public struct ConsumerTokenMinter: Sendable {
    let keys: ConsumerTokenKeys
    /// kid → the private key's raw 32 bytes (swift-crypto's key type is not `Sendable`).
    let es256PrivateKeys: [String: [UInt8]]

    public init(keys: ConsumerTokenKeys, es256PrivateKeys: [String: P256.Signing.PrivateKey] = [:]) {
        self.keys = keys
        self.es256PrivateKeys = es256PrivateKeys.mapValues { Array($0.rawRepresentation) }
    }

    /// A token for `sub`, valid from `now` for `expiresIn` seconds (`iat` = `now`), signed with
    /// the key `kid`: HS256 if it is one of `keys`' secrets, ES256 if a private key was given for it.
    public func mint(kid: String, sub: String, expiresIn: Int64, audience: String? = nil, now: Int64) throws(ConsumerTokenMinterError) -> String {
        guard Claims.isConsumerId(sub.utf8) else { throw .invalidSubject }
        guard expiresIn > 0, now >= 0, now <= NumericDate.maximum - expiresIn else { throw .invalidLifetime }
        var payload = "{\"sub\":\(Self.jsonString(sub)),\"iat\":\(now),\"exp\":\(now + expiresIn)"
        if let audience { payload += ",\"aud\":\(Self.jsonString(audience))" }
        payload += "}"
        if case .hs256(let secret)? = keys.keys[kid] {
            let header = "{\"alg\":\"HS256\",\"kid\":\(Self.jsonString(kid)),\"typ\":\"JWT\"}"
            return Self.sign(header: header, payload: payload, hs256Secret: SymmetricKey(data: secret))
        }
        if let raw = es256PrivateKeys[kid], let key = try? P256.Signing.PrivateKey(rawRepresentation: raw) {
            let header = "{\"alg\":\"ES256\",\"kid\":\(Self.jsonString(kid)),\"typ\":\"JWT\"}"
            return Self.sign(header: header, payload: payload, es256: key)
        }
        throw .unknownKey
    }

    /// `base64url(header).base64url(payload).base64url(HMAC-SHA256)`, whatever the texts say.
    public static func sign(header: String, payload: String, hs256Secret: SymmetricKey) -> String {
        let input = signingInput(header: header, payload: payload)
        let mac = HMAC<SHA256>.authenticationCode(for: input, using: hs256Secret)
        return String(decoding: input, as: UTF8.self) + "." + Base64URL.encodeString(Array(mac))
    }

    /// `base64url(header).base64url(payload).base64url(R||S)`: ES256 as JWS has it (not DER).
    public static func sign(header: String, payload: String, es256 key: P256.Signing.PrivateKey) -> String {
        let input = signingInput(header: header, payload: payload)
        // Signing cannot fail for a valid key and a digest; a failure is a broken library.
        let signature = try! key.signature(for: SHA256.hash(data: input))
        return String(decoding: input, as: UTF8.self) + "." + Base64URL.encodeString(Array(signature.rawRepresentation))
    }

    /// A JWKS document (RFC 7517) of P-256 public keys, as `CONSUMER_TOKEN_JWKS` wants it.
    public static func jwks(_ keys: [(kid: String, key: P256.Signing.PublicKey)]) -> String {
        let entries = keys.map { entry in
            let point = Array(entry.key.x963Representation)  // 0x04 || x || y
            let x = Base64URL.encodeString(point[1..<33])
            let y = Base64URL.encodeString(point[33..<65])
            return
                "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\(jsonString(entry.kid)),\"use\":\"sig\",\"alg\":\"ES256\",\"x\":\"\(x)\",\"y\":\"\(y)\"}"
        }
        return "{\"keys\":[" + entries.joined(separator: ",") + "]}"
    }

    /// base64url of arbitrary bytes, without padding (for tests and tools building tokens).
    public static func base64url(_ bytes: some Collection<UInt8>) -> String { Base64URL.encodeString(bytes) }

    private static func signingInput(header: String, payload: String) -> [UInt8] {
        Base64URL.encode(header.utf8) + [UInt8(ascii: ".")] + Base64URL.encode(payload.utf8)
    }

    /// `text` as a JSON string literal.
    static func jsonString(_ text: String) -> String {
        var output = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\u{00}"..."\u{1F}":
                let hex = String(scalar.value, radix: 16)
                output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: output.unicodeScalars.append(scalar)
            }
        }
        return output + "\""
    }
}

public enum ConsumerTokenMinterError: Error, Sendable, Equatable {
    /// No HS256 secret and no ES256 private key for that key id.
    case unknownKey
    /// `sub` is not a consumer id.
    case invalidSubject
    /// `expiresIn` not positive, or `now` + `expiresIn` outside 1970 to 9999.
    case invalidLifetime
}
