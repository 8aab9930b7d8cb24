import Crypto
public import Foundation
import ReservationCore

/// Checks `Webhook-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 with the webhook secret over
/// the bytes `<t>.<raw body>`, compared in constant time, `t` within `tolerance` of now. Runs
/// before the body is parsed or anything is stored. Several `v1=` entries (a provider rotating
/// secrets) are accepted if any one matches.
public struct WebhookVerifier: Sendable {
    private let secret: [UInt8]
    public let toleranceSeconds: Int64

    private var key: SymmetricKey { SymmetricKey(data: secret) }

    public init(secret: String, toleranceSeconds: Int64 = 300) {
        self.secret = Array(secret.utf8)
        self.toleranceSeconds = toleranceSeconds
    }

    public func isValid(signatureHeader: String?, body: [UInt8], now: Int64 = Int64(Date().timeIntervalSince1970)) -> Bool {
        guard let header = signatureHeader, header.utf8.count <= 1024 else { return false }
        var timestamp: Int64?
        var signatures: [[UInt8]] = []
        for part in header.split(separator: ",") {
            let item = part.trimmingCharacters(in: .whitespaces)
            if item.hasPrefix("t=") {
                timestamp = Self.parseTimestamp(item.dropFirst(2))
            } else if item.hasPrefix("v1="), let bytes = Self.decodeHex(item.dropFirst(3)) {
                signatures.append(bytes)
            }
        }
        guard let timestamp, !signatures.isEmpty, Self.isWithin(toleranceSeconds, timestamp, of: now) else { return false }
        var message = Array(String(timestamp).utf8)
        message.append(UInt8(ascii: "."))
        message.append(contentsOf: body)
        var valid = false
        for signature in signatures where HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: message, using: key) {
            valid = true
        }
        return valid
    }

    /// The header a provider would send; used by tests and the README's examples.
    public func signatureHeader(body: [UInt8], timestamp: Int64) -> String {
        var message = Array(String(timestamp).utf8)
        message.append(UInt8(ascii: "."))
        message.append(contentsOf: body)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: key)
        return "t=\(timestamp),v1=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    /// Unix seconds as the provider writes them: 1 to 12 decimal digits, no sign (that reaches the
    /// year 33658, and no arithmetic on it can overflow). Anything else is no timestamp.
    static func parseTimestamp<S: StringProtocol>(_ text: S) -> Int64? {
        let utf8 = text.utf8
        guard (1...12).contains(utf8.count) else { return nil }
        var value: Int64 = 0
        for byte in utf8 {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
            value = value * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// |now - timestamp| <= tolerance, without a subtraction that could overflow whatever the
    /// values (the header is anyone's to write).
    static func isWithin(_ tolerance: Int64, _ timestamp: Int64, of now: Int64) -> Bool {
        let (difference, overflow) = now.subtractingReportingOverflow(timestamp)
        return !overflow && difference.magnitude <= tolerance.magnitude
    }

    static func decodeHex<S: StringProtocol>(_ text: S) -> [UInt8]? {
        guard text.utf8.count == 64 else { return nil }
        return Digits.bytes(hex: text.utf8)
    }
}

/// Compares secrets without an early exit, so timing does not reveal how much of a guess was right.
func constantTimeEquals(_ lhs: some Collection<UInt8>, _ rhs: some Collection<UInt8>) -> Bool {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for (left, right) in zip(lhs, rhs) { difference |= left ^ right }
    return difference == 0
}
