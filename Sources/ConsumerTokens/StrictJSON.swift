/// A small, strict JSON reader (RFC 8259) for token headers, claims and JWKS files. Our own rather
/// than Foundation's because the rules that matter here are ones general parsers relax:
/// - a duplicate member name anywhere is refused (parsers that keep the last one let a token
///   say `"sub":"alice"` to one reader and `"sub":"mallory"` to another);
/// - strings must be valid UTF-8 with no lone surrogate escapes, no raw control characters;
/// - nothing but whitespace may follow the value; nesting is bounded (no stack exhaustion);
/// - numbers are kept as their text, so a date is read exactly, never through a lossy Double.
indirect enum JSONValue: Sendable, Equatable {
    case object([String: JSONValue])
    case array([JSONValue])
    case string(String)
    /// The number's text, already checked against JSON's grammar.
    case number([UInt8])
    case bool(Bool)
    case null

    static let maxDepth = 32

    /// The value of `bytes`, which must be exactly one JSON value (whitespace around it allowed).
    static func parse(_ bytes: [UInt8]) -> JSONValue? {
        bytes.withUnsafeBufferPointer { bytes in
            var reader = Reader(cursor: JSONCursor(bytes: bytes))
            guard let value = reader.value(depth: 0) else { return nil }
            reader.cursor.skipWhitespace()
            return reader.index == bytes.count ? value : nil
        }
    }

    /// `bytes` as a JSON object, or nil if they are anything else.
    static func parseObject(_ bytes: [UInt8]) -> [String: JSONValue]? {
        guard case .object(let members) = parse(bytes) else { return nil }
        return members
    }
}

/// A position in JSON bytes and the grammar both readers share (this file's full one and
/// `FlatClaims`): whitespace, single bytes, literals and numbers.
struct JSONCursor {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    mutating func skipWhitespace() {
        while index < bytes.count, bytes[index] == 0x20 || bytes[index] == 0x0A || bytes[index] == 0x0D || bytes[index] == 0x09 {
            index += 1
        }
    }

    mutating func take(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard bytes.count - index >= count else { return false }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { return false }
        index += count
        return true
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`: whether one is here (and passed).
    mutating func number() -> Bool {
        _ = take(UInt8(ascii: "-"))
        guard index < bytes.count, isDigit(bytes[index]) else { return false }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            skipDigits()
        }
        if take(UInt8(ascii: ".")) {
            guard index < bytes.count, isDigit(bytes[index]) else { return false }
            skipDigits()
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { return false }
            skipDigits()
        }
        return true
    }

    mutating func skipDigits() {
        while index < bytes.count, isDigit(bytes[index]) { index += 1 }
    }

    func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
}

private struct Reader {
    var cursor: JSONCursor
    var bytes: UnsafeBufferPointer<UInt8> { cursor.bytes }
    var index: Int {
        get { cursor.index }
        set { cursor.index = newValue }
    }

    mutating func skipWhitespace() { cursor.skipWhitespace() }

    mutating func value(depth: Int) -> JSONValue? {
        skipWhitespace()
        guard index < bytes.count else { return nil }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            return depth < JSONValue.maxDepth ? object(depth: depth + 1) : nil
        case UInt8(ascii: "["):
            return depth < JSONValue.maxDepth ? array(depth: depth + 1) : nil
        case UInt8(ascii: "\""):
            return string().map(JSONValue.string)
        case UInt8(ascii: "t"):
            return literal("true") ? .bool(true) : nil
        case UInt8(ascii: "f"):
            return literal("false") ? .bool(false) : nil
        case UInt8(ascii: "n"):
            return literal("null") ? .null : nil
        default:
            return number()
        }
    }

    mutating func literal(_ word: StaticString) -> Bool { cursor.literal(word) }

    mutating func object(depth: Int) -> JSONValue? {
        index += 1  // {
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\""), let name = string() else { return nil }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
            index += 1
            guard let value = value(depth: depth) else { return nil }
            // Duplicate names: refused. Names are compared as decoded text, so `"s\u0075b"` and
            // `"sub"` are the same name (as any reader would take them).
            guard members.updateValue(value, forKey: name) == nil else { return nil }
            skipWhitespace()
            guard index < bytes.count else { return nil }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            } else {
                return nil
            }
        }
    }

    mutating func array(depth: Int) -> JSONValue? {
        index += 1  // [
        var elements: [JSONValue] = []
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return .array(elements)
        }
        while true {
            guard let element = value(depth: depth) else { return nil }
            elements.append(element)
            skipWhitespace()
            guard index < bytes.count else { return nil }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            } else {
                return nil
            }
        }
    }

    /// A string starting at the opening quote.
    mutating func string() -> String? {
        index += 1  // "
        var text: [UInt8] = []
        var ascii = true
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                // Raw bytes must be valid UTF-8 (escapes produced valid UTF-8 already); ASCII,
                // the usual case, is, and skips the validation's cost.
                if ascii { return String(decoding: text, as: UTF8.self) }
                return String(validating: text, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard index < bytes.count else { return nil }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): text.append(escape)
                case UInt8(ascii: "b"): text.append(0x08)
                case UInt8(ascii: "f"): text.append(0x0C)
                case UInt8(ascii: "n"): text.append(0x0A)
                case UInt8(ascii: "r"): text.append(0x0D)
                case UInt8(ascii: "t"): text.append(0x09)
                case UInt8(ascii: "u"):
                    guard let scalar = unicodeEscape() else { return nil }
                    if !scalar.isASCII { ascii = false }
                    UTF8.encode(scalar) { text.append($0) }
                default: return nil
                }
            case 0x00..<0x20:
                return nil  // control characters must be escaped
            default:
                if byte >= 0x80 { ascii = false }
                text.append(byte)
            }
        }
        return nil  // unterminated
    }

    /// After `\u`: four hex digits, and a second `\uXXXX` when the first is a high surrogate.
    /// A lone surrogate (which no UTF-8 text can hold) is refused.
    mutating func unicodeEscape() -> Unicode.Scalar? {
        guard let first = hex4() else { return nil }
        switch first {
        case 0xD800...0xDBFF:
            guard bytes.count - index >= 2, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else { return nil }
            index += 2
            guard let second = hex4(), (0xDC00...0xDFFF).contains(second) else { return nil }
            return Unicode.Scalar(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
        case 0xDC00...0xDFFF:
            return nil
        default:
            return Unicode.Scalar(first)
        }
    }

    mutating func hex4() -> UInt32? {
        guard bytes.count - index >= 4 else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    /// A number, kept as its text.
    mutating func number() -> JSONValue? {
        let start = index
        guard cursor.number() else { return nil }
        return .number(Array(bytes[start..<index]))
    }
}
