/// The claims of the payloads issuers actually sign, read in one pass over the bytes with no
/// allocation but the subject's: a JSON object of at most `maximumMembers` members, its names and
/// strings plain printable ASCII with no escape, its values strings, numbers, literals or arrays
/// of those. That is every token our minter makes and those of the usual identity providers'
/// access tokens; anything else (an escape, non-ASCII text, a nested object, a malformed byte, a
/// duplicate name) is not answered here but handed to the full reader (`JSONValue` and
/// `Claims.read`), which decides it.
///
/// The rule that keeps the two readers one: whatever this one answers, the full reader answers
/// the same (the same claims or the same refusal) for the same bytes. Within its shape the raw
/// bytes are the decoded text (no escapes, ASCII only), so comparing names and the audience by
/// their bytes is comparing what the full reader decodes. The unit tests and the token fuzzer
/// check the agreement on every input they make (`ClaimsReaders.agree`).
///
/// Why it exists: the full reader built a dictionary of `String`s for every payload, about
/// 2.5 µs of the 5.8 µs an uncached HS256 verification cost on this machine (perf), against a
/// target of 10 % of a whole reservation for all of the token's work.
enum FlatClaims {
    static let maximumMembers = 16

    fileprivate enum Kind { case string, number, array, other }

    private struct Member {
        var name: Range<Int>
        var value: Range<Int>
        var kind: Kind
    }

    /// The claims or the full reader's refusal; nil: not this reader's shape, ask the full one.
    static func read(_ payload: [UInt8], audience: [UInt8]?) -> Result<Claims, ConsumerTokenError>? {
        payload.withUnsafeBufferPointer { bytes in read(bytes, audience: audience) }
    }

    private static func read(_ bytes: UnsafeBufferPointer<UInt8>, audience: [UInt8]?) -> Result<Claims, ConsumerTokenError>? {
        // The names seen so far, for the duplicate check, on the stack (not `InlineArray`: the
        // package builds with Swift 6.0 and for macOS 14).
        withUnsafeTemporaryAllocation(of: Range<Int>.self, capacity: maximumMembers) { names in
            read(bytes, audience: audience, names: names)
        }
    }

    private static func read(
        _ bytes: UnsafeBufferPointer<UInt8>, audience: [UInt8]?, names: UnsafeMutableBufferPointer<Range<Int>>
    ) -> Result<Claims, ConsumerTokenError>? {
        var scanner = JSONCursor(bytes: bytes)
        var count = 0
        var subject: Member?
        var expiry: Member?
        var notBefore: Member?
        var issuedAt: Member?
        var audienceMember: Member?

        scanner.skipWhitespace()
        guard scanner.take(UInt8(ascii: "{")) else { return nil }
        scanner.skipWhitespace()
        if !scanner.take(UInt8(ascii: "}")) {
            while true {
                scanner.skipWhitespace()
                guard let name = scanner.plainString() else { return nil }
                scanner.skipWhitespace()
                guard scanner.take(UInt8(ascii: ":")) else { return nil }
                scanner.skipWhitespace()
                guard let (value, kind) = scanner.value() else { return nil }
                guard count < names.count else { return nil }
                let member = Member(name: name, value: value, kind: kind)
                // A duplicate name: the full reader refuses the payload; let it say so.
                for index in 0..<count where equal(bytes, names[index], name) { return nil }
                names.initializeElement(at: count, to: name)
                count += 1
                switch name.count {
                case 3 where equal(bytes, name, "sub"): subject = member
                case 3 where equal(bytes, name, "exp"): expiry = member
                case 3 where equal(bytes, name, "nbf"): notBefore = member
                case 3 where equal(bytes, name, "iat"): issuedAt = member
                case 3 where equal(bytes, name, "aud"): audienceMember = member
                default: break
                }
                scanner.skipWhitespace()
                if scanner.take(UInt8(ascii: ",")) { continue }
                guard scanner.take(UInt8(ascii: "}")) else { return nil }
                break
            }
        }
        scanner.skipWhitespace()
        guard scanner.index == bytes.count else { return nil }

        // The full reader's checks, in its order (`Claims.read`).
        guard let subject, subject.kind == .string, Claims.isConsumerId(UnsafeBufferPointer(rebasing: bytes[subject.value])) else {
            return .failure(.init(.invalidSubject))
        }
        guard let expiry, expiry.kind == .number, let expiresAt = NumericDate.seconds(UnsafeBufferPointer(rebasing: bytes[expiry.value])) else {
            return .failure(.init(.invalidTime))
        }
        var notBeforeSeconds: Int64?
        if let notBefore {
            guard notBefore.kind == .number, let seconds = NumericDate.seconds(UnsafeBufferPointer(rebasing: bytes[notBefore.value])) else {
                return .failure(.init(.invalidTime))
            }
            notBeforeSeconds = seconds
        }
        var issuedAtSeconds: Int64?
        if let issuedAt {
            guard issuedAt.kind == .number, let seconds = NumericDate.seconds(UnsafeBufferPointer(rebasing: bytes[issuedAt.value])) else {
                return .failure(.init(.invalidTime))
            }
            issuedAtSeconds = seconds
        }
        if let audience {
            guard let audienceMember else { return .failure(.init(.audienceMismatch)) }
            switch audienceMember.kind {
            case .string:
                guard bytes[audienceMember.value].elementsEqual(audience) else { return .failure(.init(.audienceMismatch)) }
            case .array:
                // RFC 7519 §4.1.3: every element a string, one of them ours.
                var elements = JSONCursor(bytes: UnsafeBufferPointer(rebasing: bytes[audienceMember.value]))
                var found = false
                elements.index = 1  // [
                while true {
                    elements.skipWhitespace()
                    if elements.take(UInt8(ascii: "]")) { break }
                    guard let (element, kind) = elements.value(), kind == .string else { return .failure(.init(.audienceMismatch)) }
                    if elements.bytes[element].elementsEqual(audience) { found = true }
                    elements.skipWhitespace()
                    _ = elements.take(UInt8(ascii: ","))
                }
                guard found else { return .failure(.init(.audienceMismatch)) }
            case .number, .other:
                return .failure(.init(.audienceMismatch))
            }
        }
        let subjectText = String(decoding: UnsafeBufferPointer(rebasing: bytes[subject.value]), as: UTF8.self)
        return .success(Claims(subject: subjectText, expiresAt: expiresAt, notBefore: notBeforeSeconds, issuedAt: issuedAtSeconds))
    }

    private static func equal(_ bytes: UnsafeBufferPointer<UInt8>, _ left: Range<Int>, _ right: Range<Int>) -> Bool {
        left.count == right.count && bytes[left].elementsEqual(bytes[right])
    }

    private static func equal(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ word: StaticString) -> Bool {
        guard range.count == word.utf8CodeUnitCount else { return false }
        for offset in 0..<range.count where bytes[range.lowerBound + offset] != word.utf8Start[offset] { return false }
        return true
    }
}

/// What only the flat reader reads: each method either consumes what it recognizes and says
/// so, or says nil (the caller then gives up on this reader).
extension JSONCursor {
    /// A string of printable ASCII without escapes; the range of its text (inside the quotes).
    fileprivate mutating func plainString() -> Range<Int>? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                index += 1
                return start..<(index - 1)
            }
            // An escape, a control character or non-ASCII: the full reader's business.
            guard byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\\") else { return nil }
            index += 1
        }
        return nil
    }

    /// A member's value: a plain string (its text's range), a number, a literal, or an array
    /// of those (their whole range, brackets included).
    fileprivate mutating func value() -> (Range<Int>, FlatClaims.Kind)? {
        guard index < bytes.count else { return nil }
        let start = index
        switch bytes[index] {
        case UInt8(ascii: "\""):
            return plainString().map { ($0, .string) }
        case UInt8(ascii: "["):
            index += 1
            skipWhitespace()
            if take(UInt8(ascii: "]")) { return (start..<index, .array) }
            while true {
                skipWhitespace()
                // Nothing nested (and so no recursion deeper than this).
                guard index < bytes.count, bytes[index] != UInt8(ascii: "["), bytes[index] != UInt8(ascii: "{") else { return nil }
                guard value() != nil else { return nil }
                skipWhitespace()
                if take(UInt8(ascii: ",")) { continue }
                guard take(UInt8(ascii: "]")) else { return nil }
                return (start..<index, .array)
            }
        case UInt8(ascii: "t"):
            return literal("true") ? (start..<index, .other) : nil
        case UInt8(ascii: "f"):
            return literal("false") ? (start..<index, .other) : nil
        case UInt8(ascii: "n"):
            return literal("null") ? (start..<index, .other) : nil
        default:
            return number() ? (start..<index, .number) : nil
        }
    }
}

/// Both claims readers, for the tests and the fuzzer: the fast one must never disagree with the
/// full one on an input it answers.
package enum ClaimsReaders {
    /// The full reader's verdict on a payload: the claims' subject and times, or the refusal.
    static func full(_ payload: [UInt8], audience: [UInt8]?) -> Result<Claims, ConsumerTokenError> {
        guard let object = JSONValue.parseObject(payload) else { return .failure(.init(.malformedClaims)) }
        return Claims.read(object, audience: audience)
    }

    /// Whether the fast reader either passes `payload` on or answers exactly as the full one.
    package static func agree(_ payload: [UInt8], audience: String?) -> Bool {
        let audienceBytes = audience.map { Array($0.utf8) }
        guard let fast = FlatClaims.read(payload, audience: audienceBytes) else { return true }
        return fast == full(payload, audience: audienceBytes)
    }

    /// Whether the fast reader answers `payload` itself (for tests: the shapes it must cover).
    package static func answersFast(_ payload: [UInt8], audience: String?) -> Bool {
        FlatClaims.read(payload, audience: audience.map { Array($0.utf8) }) != nil
    }
}
