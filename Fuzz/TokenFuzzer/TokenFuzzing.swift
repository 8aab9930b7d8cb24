// libFuzzer target: arbitrary bytes through consumer token verification and key parsing, with a
// fixed key set. Nothing may trap (overflow, bad index, stack exhaustion), and whatever verifies
// must satisfy the contract: a valid consumer id, an expiry in range and not past, the same
// answer twice (the second time from the cache for ES256), and a refusal once any bit changes.
//
// Random bytes almost never carry a valid signature, so the first byte picks a mode, and most
// modes sign what the fuzzer made, to reach the claims:
//   0: the rest is a token, verified as is;
//   1: the rest is "header JSON \0 payload JSON", signed HS256 with the fixed secret;
//   2: the rest is a payload JSON, under a valid ES256 header, signed with the fixed P-256 key;
//   3: the rest is "CONSUMER_TOKEN_KEYS \0 JWKS", parsed (which must refuse or yield keys);
//   4: the rest is a payload, read by both claims readers, which must agree where the fast one
//      answers (with and without an audience).
//
// Built by scripts/fuzz.sh with RESERVATION_FUZZ_BUILD=1 (libFuzzer supplies `main`); in an
// ordinary build Replay.swift adds one: `TokenFuzzer <file>...` replays inputs.
import ConsumerTokens
import Crypto

let hsSecret: [UInt8] = Array(0..<32)
var esKey: P256.Signing.PrivateKey { try! P256.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0x11, count: 32)) }
let keys = try! ConsumerTokenKeys(
    hs256: "hs1:\(ConsumerTokenMinter.base64url(hsSecret))", jwksJSON: Array(ConsumerTokenMinter.jwks([("es1", esKey.publicKey)]).utf8))
let verifier = ConsumerTokenVerifier(keys: keys, cacheCapacity: 64)
let audienceVerifier = ConsumerTokenVerifier(keys: keys, audience: "shop", cacheCapacity: 0)
let clocks: [Int64] = [0, 1_800_000_000, .max, .min]

func check(_ input: [UInt8]) {
    guard let mode = input.first else {
        _ = verifier.verify([UInt8](), nowSeconds: 0)
        return
    }
    let rest = Array(input.dropFirst())
    switch mode % 5 {
    case 0:
        checkToken(rest)
        _ = ConsumerTokenVerifier.bearer(String(decoding: rest, as: UTF8.self)).map { checkToken(Array($0.utf8)) }
    case 1:
        let (header, payload) = split(rest)
        let token = ConsumerTokenMinter.sign(
            header: String(decoding: header, as: UTF8.self), payload: String(decoding: payload, as: UTF8.self),
            hs256Secret: SymmetricKey(data: hsSecret))
        checkToken(Array(token.utf8))
    case 2:
        let token = ConsumerTokenMinter.sign(header: #"{"alg":"ES256","kid":"es1"}"#, payload: String(decoding: rest, as: UTF8.self), es256: esKey)
        checkToken(Array(token.utf8))
    case 4:
        precondition(ClaimsReaders.agree(rest, audience: nil) && ClaimsReaders.agree(rest, audience: "shop"), "the claims readers disagree")
    default:
        let (hs256, jwks) = split(rest)
        if let parsed = try? ConsumerTokenKeys(hs256: String(decoding: hs256, as: UTF8.self), jwksJSON: jwks) {
            precondition(parsed.keyIds.count == parsed.hs256Count + parsed.es256Count)
            precondition(parsed.keyIds.allSatisfy { !$0.isEmpty && $0.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F } })
        }
    }
}

func checkToken(_ token: [UInt8]) {
    _ = audienceVerifier.verify(token, nowSeconds: 1_800_000_000)
    for now in clocks {
        let result = verifier.verify(token, nowSeconds: now)
        guard case .success(let consumer) = result else {
            // Refused before the times were looked at: the same at any clock, so one will do
            // (and the fuzzer spends its time on new inputs, not on repeating P-256 checks).
            guard case .failure(let error) = result, [.expired, .notYetValid, .issuedInFuture].contains(error.reason) else { return }
            continue
        }
        precondition(isConsumerId(consumer.consumerId), "accepted an invalid sub")
        precondition((0...253_402_300_799).contains(consumer.expiresAt), "accepted an exp out of range")
        precondition(now < consumer.expiresAt + 30, "accepted an expired token")
        precondition(token.count <= 4096 && token.filter { $0 == UInt8(ascii: ".") }.count == 2)
        // Twice: the same answer (for ES256, the second one from the cache).
        precondition(verifier.verify(token, nowSeconds: now) == result, "a second verification disagrees")
        // Any one bit changed: refused.
        var hash: UInt64 = 14_695_981_039_346_656_037
        for byte in token { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
        var flipped = token
        flipped[Int(hash % UInt64(token.count))] ^= 1 << UInt8(hash >> 61)
        if case .success = verifier.verify(flipped, nowSeconds: now) { preconditionFailure("accepted a changed token") }
    }
}

/// Before and after the first NUL byte (all of it and nothing when there is none).
func split(_ bytes: [UInt8]) -> ([UInt8], [UInt8]) {
    guard let zero = bytes.firstIndex(of: 0) else { return (bytes, []) }
    return (Array(bytes[..<zero]), Array(bytes[(zero + 1)...]))
}

/// The contract's id format, written again here rather than taken from the code under test.
func isConsumerId(_ id: String) -> Bool {
    let utf8 = Array(id.utf8)
    return (1...128).contains(utf8.count)
        && utf8.allSatisfy { Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-".utf8).contains($0) }
}

/// The seed corpus (Fuzz/corpus/token), written by `TokenFuzzer --write-seeds <dir>`: one input
/// per mode that reaches the end of it.
func seeds() -> [(String, [UInt8])] {
    let minter = ConsumerTokenMinter(keys: keys, es256PrivateKeys: ["es1": esKey])
    let claims = #"{"sub":"alice","exp":1800000600,"iat":1799999990,"nbf":1799999990,"aud":["shop","x"]}"#
    return [
        ("hs256", [0] + Array(try! minter.mint(kid: "hs1", sub: "alice", expiresIn: 600, audience: "shop", now: 1_800_000_000).utf8)),
        ("es256", [0] + Array(try! minter.mint(kid: "es1", sub: "alice", expiresIn: 600, now: 1_800_000_000).utf8)),
        ("bearer", [5] + Array("Bearer \(try! minter.mint(kid: "hs1", sub: "bob", expiresIn: 60, now: 1_800_000_000))".utf8)),
        ("claims", [4] + Array(claims.utf8)),
        ("signed-hs256", [1] + Array(#"{"alg":"HS256","kid":"hs1"}"#.utf8) + [0] + Array(claims.utf8)),
        ("signed-es256", [2] + Array(#"{"sub":"u:1@x.y","exp":1.8000006e9,"aud":"shop"}"#.utf8)),
        (
            "keys",
            [3] + Array("a:\(ConsumerTokenMinter.base64url(hsSecret)), b:\(ConsumerTokenMinter.base64url(hsSecret))".utf8) + [0]
                + Array(ConsumerTokenMinter.jwks([("es1", esKey.publicKey)]).utf8)
        ),
    ]
}

/// libFuzzer's entry point (libFuzzer's own `main` calls it; in ordinary builds `Replay` does).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    check(start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [])
    return 0
}
