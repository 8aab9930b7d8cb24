/// The claims verification keeps: enough to re-check the times on a cache hit exactly as the full
/// verification does (the audience is fixed per verifier, so it needs no second look).
struct Claims: Sendable, Equatable {
    var subject: String
    var expiresAt: Int64
    var notBefore: Int64?
    var issuedAt: Int64?

    /// The claims of a JSON payload, or the reason they are refused. `audience`: the configured
    /// `CONSUMER_TOKEN_AUDIENCE` (as bytes: compared exactly, not by Unicode equivalence).
    static func read(_ payload: [String: JSONValue], audience: [UInt8]?) -> Result<Claims, ConsumerTokenError> {
        guard case .string(let subject)? = payload["sub"], isConsumerId(subject.utf8) else { return .failure(.init(.invalidSubject)) }
        guard let expiresAt = NumericDate.seconds(payload["exp"]) else { return .failure(.init(.invalidTime)) }
        var notBefore: Int64?
        var issuedAt: Int64?
        if let value = payload["nbf"] {
            guard let seconds = NumericDate.seconds(value) else { return .failure(.init(.invalidTime)) }
            notBefore = seconds
        }
        if let value = payload["iat"] {
            guard let seconds = NumericDate.seconds(value) else { return .failure(.init(.invalidTime)) }
            issuedAt = seconds
        }
        if let audience {
            // RFC 7519 §4.1.3: a string, or an array of strings one of which must be ours.
            switch payload["aud"] {
            case .string(let value)?:
                guard value.utf8.elementsEqual(audience) else { return .failure(.init(.audienceMismatch)) }
            case .array(let values)?:
                var found = false
                for value in values {
                    guard case .string(let text) = value else { return .failure(.init(.audienceMismatch)) }
                    if text.utf8.elementsEqual(audience) { found = true }
                }
                guard found else { return .failure(.init(.audienceMismatch)) }
            default:
                return .failure(.init(.audienceMismatch))
            }
        }
        return .success(Claims(subject: subject, expiresAt: expiresAt, notBefore: notBefore, issuedAt: issuedAt))
    }

    /// nil when the token holds at `now`. Dates are at most year 9999 and the leeway at most an
    /// hour, so none of these sums can overflow, whatever `now` is.
    func timeRefusal(now: Int64, leeway: Int64) -> ConsumerTokenError.Reason? {
        guard now < expiresAt + leeway else { return .expired }
        if let notBefore, notBefore - leeway > now { return .notYetValid }
        if let issuedAt, issuedAt - leeway > now { return .issuedInFuture }
        return nil
    }

    /// The contract's id format (ReservationCore's `Identifier.isValid`, repeated here so this
    /// module depends on nothing of the gateway's).
    static func isConsumerId(_ id: some Collection<UInt8>) -> Bool {
        guard !id.isEmpty, id.count <= 128 else { return false }
        return id.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "-"):
                return true
            default:
                return false
            }
        }
    }
}

/// RFC 7519 NumericDate: a JSON number of seconds since 1970, a fraction floored. Read from the
/// number's decimal text exactly (no Double: `1e300`, `9223372036854775807` or a 4000-digit
/// number are just "too large", never a trap or a rounding). Negative numbers and anything after
/// 9999-12-31T23:59:59Z are refused: no real token needs them, and the bound keeps every sum
/// with a leeway far from Int64's limits.
enum NumericDate {
    static let maximum: Int64 = 253_402_300_799

    static func seconds(_ value: JSONValue?) -> Int64? {
        guard case .number(let text)? = value else { return nil }
        return seconds(text)
    }

    /// `text` has JSON's number grammar (the reader checked it; what is not a digit where one is
    /// expected is refused here anyway, rather than trusted).
    static func seconds(_ text: [UInt8]) -> Int64? {
        text.withUnsafeBufferPointer { seconds($0) }
    }

    /// The same, over the bytes in place (no allocation: two passes over the digits).
    static func seconds(_ text: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard let first = text.first, first != UInt8(ascii: "-") else { return nil }
        // First pass: the significant digits (from the first non-zero one, integer and fraction
        // parts together), how many of them the fraction holds, and the exponent.
        var significantDigits = 0
        var fractionDigits = 0
        var index = 0
        var inFraction = false
        while index < text.count {
            let byte = text[index]
            if byte == UInt8(ascii: ".") {
                inFraction = true
            } else if byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") {
                break
            } else {
                guard isDigit(byte) else { return nil }
                if !(significantDigits == 0 && byte == UInt8(ascii: "0")) { significantDigits += 1 }
                if inFraction { fractionDigits += 1 }
            }
            index += 1
        }
        let mantissaEnd = index
        // The exponent, saturated: past ±100000 it is far beyond any digit count we can hold.
        var exponent = 0
        if index < text.count {
            index += 1
            var negative = false
            if index < text.count, text[index] == UInt8(ascii: "+") || text[index] == UInt8(ascii: "-") {
                negative = text[index] == UInt8(ascii: "-")
                index += 1
            }
            while index < text.count {
                guard isDigit(text[index]) else { return nil }
                exponent = min(exponent * 10 + Int(text[index] - UInt8(ascii: "0")), 100_000)
                index += 1
            }
            if negative { exponent = -exponent }
        }
        if significantDigits == 0 { return 0 }
        // value = digits × 10^(exponent - fractionDigits); its integer part has this many digits:
        let integerDigits = significantDigits + exponent - fractionDigits
        if integerDigits <= 0 { return 0 }  // below 1: floors to 0
        if integerDigits > 12 { return nil }  // at least 10^12 > maximum
        // Second pass: the first `integerDigits` significant digits, then zeros.
        var seconds: Int64 = 0
        var taken = 0
        var significant = false
        for position in 0..<mantissaEnd where taken < integerDigits {
            let byte = text[position]
            if byte == UInt8(ascii: ".") || (!significant && byte == UInt8(ascii: "0")) { continue }
            significant = true
            seconds = seconds * 10 + Int64(byte - UInt8(ascii: "0"))
            taken += 1
        }
        while taken < integerDigits {
            seconds *= 10
            taken += 1
        }
        return seconds <= maximum ? seconds : nil
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
}
