// µs per consumer token verification, no sockets: HS256 (never cached), ES256 with the cache off
// and answered from the cache, plus the parts (the cache key's SHA-256, rebuilding a P-256 key) and
// what refusals cost. Each figure is the median of several runs of `count` verifications
// (a tenth of that for uncached ES256). Build with `swift build -c release --product bench-tokens`; not a test, no
// assertion on the numbers, only a print.
//
//   bench-tokens [count] [runs] [name prefix]   default 20000 verifications, 7 runs, every figure
import ConsumerTokens
import Crypto

#if canImport(Glibc)
    import Glibc
#endif

let arguments = CommandLine.arguments
let count = arguments.count > 1 ? Int(arguments[1]) ?? 20_000 : 20_000
let runs = arguments.count > 2 ? Int(arguments[2]) ?? 7 : 7
/// Only the figures whose name starts with this (for a profiler).
let only = arguments.count > 3 ? arguments[3] : ""

let now: Int64 = 1_800_000_000
let secret: [UInt8] = Array(0..<32)
let privateKey = try! P256.Signing.PrivateKey(rawRepresentation: [UInt8](repeating: 0x11, count: 32))
let keys = try! ConsumerTokenKeys(
    hs256: "hs1:\(ConsumerTokenMinter.base64url(secret))", jwksJSON: Array(ConsumerTokenMinter.jwks([("es1", privateKey.publicKey)]).utf8))
let minter = ConsumerTokenMinter(keys: keys, es256PrivateKeys: ["es1": privateKey])
// A realistic token: a typical sub, an audience, iat (about 200 bytes, like a shop login's).
let hsToken = try! minter.mint(kid: "hs1", sub: "consumer-7f3a9c2e@shop.example", expiresIn: 3600, audience: "shop", now: now)
let esToken = try! minter.mint(kid: "es1", sub: "consumer-7f3a9c2e@shop.example", expiresIn: 3600, audience: "shop", now: now)

func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// Median µs per call of `body` over `runs` runs of `count` calls.
func measure(_ name: String, count: Int, _ body: () -> Bool) {
    guard name.hasPrefix(only) else { return }
    var perCall: [Double] = []
    for _ in 0..<runs {
        var failures = 0
        let start = monotonicNanoseconds()
        for _ in 0..<count where !body() { failures += 1 }
        let elapsed = monotonicNanoseconds() - start
        precondition(failures == 0, "\(name): \(failures) refusals")
        perCall.append(Double(elapsed) / Double(count) / 1000)
    }
    perCall.sort()
    let median = perCall[perCall.count / 2]
    let text = String(Int((median * 100).rounded())).leftPadded(to: 3)
    print(
        "\(name.padding(to: 34)) \(text.dropLast(2)).\(text.suffix(2)) µs   (min \(formatted(perCall.first!)), max \(formatted(perCall.last!)); \(runs) × \(count))"
    )
}

func formatted(_ value: Double) -> String {
    let text = String(Int((value * 100).rounded())).leftPadded(to: 3)
    return "\(text.dropLast(2)).\(text.suffix(2))"
}

extension String {
    func padding(to length: Int) -> String { self + String(repeating: " ", count: max(0, length - count)) }
    func leftPadded(to length: Int) -> String { String(repeating: "0", count: max(0, length - count)) + self }
}

func accepted(_ result: Result<VerifiedConsumer, ConsumerTokenError>) -> Bool {
    if case .success = result { return true }
    return false
}

let cached = ConsumerTokenVerifier(keys: keys, audience: "shop")
let uncached = ConsumerTokenVerifier(keys: keys, audience: "shop", cacheCapacity: 0)
print("tokens: HS256 \(hsToken.utf8.count) bytes, ES256 \(esToken.utf8.count) bytes")
// HS256 tokens are never cached (ConsumerTokenVerifier): one figure, the verifier as the gateway has it.
measure("HS256", count: count) { accepted(cached.verify(hsToken, nowSeconds: now)) }
measure("ES256, cache off", count: max(1, count / 10)) { accepted(uncached.verify(esToken, nowSeconds: now)) }
measure("ES256, cached", count: count) { accepted(cached.verify(esToken, nowSeconds: now)) }
// For scale: SHA-256 of a 200-byte token (what keys the cache for an ES256 token over 1 KiB costs per KiB, roughly).
let hsBytes = Array(hsToken.utf8)
measure("SHA-256 of the HS256 token", count: count) { SHA256.hash(data: hsBytes).withUnsafeBytes { $0[0] != 1 || true } }
// Part of the uncached ES256 figure: rebuilding the public key from its stored point (the keys
// are kept as bytes, swift-crypto's key types not being Sendable).
let point = Array(privateKey.publicKey.x963Representation)
measure("P-256 public key from its point", count: count) { (try? P256.Signing.PublicKey(x963Representation: point)) != nil }
// A refusal's cost: a bad HS256 signature and an unknown kid (what a flood of garbage costs).
let badHS = String(hsToken.dropLast(2)) + (hsToken.hasSuffix("AA") ? "BA" : "AA")
measure("refused: HS256 bad signature", count: count) { !accepted(cached.verify(badHS, nowSeconds: now)) }
measure("refused: alg none", count: count) { !accepted(cached.verify("eyJhbGciOiJub25lIn0.e30.", nowSeconds: now)) }
