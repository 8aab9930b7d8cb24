import Crypto
import Testing

@testable import ConsumerTokens

/// Keys, clocks and token builders shared by the tests. The keys are fixed (not random), so a
/// failure reproduces exactly.
enum Fixture {
    static let now: Int64 = 1_800_000_000

    static let hsSecret: [UInt8] = Array(0..<32)
    static let hsSecret2: [UInt8] = Array(100..<140)
    // swift-crypto's keys are not Sendable, so no static stored ones: rebuilt when asked (cheap).
    static var esKey: P256.Signing.PrivateKey { try! .init(rawRepresentation: [UInt8](repeating: 0x11, count: 32)) }
    static var esKey2: P256.Signing.PrivateKey { try! .init(rawRepresentation: [UInt8](repeating: 0x22, count: 32)) }
    /// Configured nowhere.
    static var strangerKey: P256.Signing.PrivateKey { try! .init(rawRepresentation: [UInt8](repeating: 0x33, count: 32)) }

    static var hsValue: String { "hs1:\(b64(hsSecret)),hs2:\(b64(hsSecret2))" }
    static var jwksText: String { ConsumerTokenMinter.jwks([("es1", esKey.publicKey), ("es2", esKey2.publicKey)]) }
    static let keys = try! ConsumerTokenKeys(hs256: hsValue, jwksJSON: Array(jwksText.utf8))

    static let hsHeader = #"{"alg":"HS256","kid":"hs1","typ":"JWT"}"#
    static let esHeader = #"{"alg":"ES256","kid":"es1","typ":"JWT"}"#

    static func verifier(audience: String? = nil, cacheCapacity: Int = 64) -> ConsumerTokenVerifier {
        ConsumerTokenVerifier(keys: keys, audience: audience, cacheCapacity: cacheCapacity)
    }

    static func b64(_ bytes: some Collection<UInt8>) -> String { ConsumerTokenMinter.base64url(bytes) }
    static func b64(_ text: String) -> String { b64(text.utf8) }

    /// A claims object: `sub` and `exp` as given (JSON text, nil to leave out), then `extra` members.
    static func claims(sub: String? = #""alice""#, exp: String? = String(now + 600), _ extra: String = "") -> String {
        var members: [String] = []
        if let sub { members.append(#""sub":\#(sub)"#) }
        if let exp { members.append(#""exp":\#(exp)"#) }
        if !extra.isEmpty { members.append(extra) }
        return "{" + members.joined(separator: ",") + "}"
    }

    static func hs(_ header: String = hsHeader, _ payload: String = claims(), secret: [UInt8] = hsSecret) -> String {
        ConsumerTokenMinter.sign(header: header, payload: payload, hs256Secret: SymmetricKey(data: secret))
    }

    static func es(_ header: String = esHeader, _ payload: String = claims(), key: P256.Signing.PrivateKey = esKey) -> String {
        ConsumerTokenMinter.sign(header: header, payload: payload, es256: key)
    }

    /// `header.payload.signature` from raw parts (each base64url-encoded here unless already text).
    static func parts(_ token: String) -> [Substring] { token.split(separator: ".", omittingEmptySubsequences: false) }
}

/// The refusal's reason, or nil if the token was accepted.
func reason(_ result: Result<VerifiedConsumer, ConsumerTokenError>) -> ConsumerTokenError.Reason? {
    if case .failure(let error) = result { return error.reason }
    return nil
}

func verify(_ token: String, verifier: ConsumerTokenVerifier = Fixture.verifier(), now: Int64 = Fixture.now) -> ConsumerTokenError.Reason? {
    reason(verifier.verify(token, nowSeconds: now))
}
