/// Base64url without padding (RFC 4648 §5, RFC 7515 §2), strict: only `A-Z a-z 0-9 - _`, no `=`,
/// no whitespace, no length that leaves a lone character, and the unused low bits of the last
/// character must be zero. That last rule makes decoding one-to-one: every accepted string is the
/// only encoding of its bytes, so a changed character always changes the bytes (or is refused),
/// and nothing can slip a second spelling of a token past a cache keyed by its text.
package enum Base64URL {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// Each byte's 6-bit value, or 0xFF for one outside the alphabet (a table: one load a
    /// character instead of five comparisons).
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (value, character) in alphabet.enumerated() { table[Int(character)] = UInt8(value) }
        return table
    }()

    /// The decoded bytes, or nil if `text` is not canonical unpadded base64url.
    package static func decode(_ text: some Collection<UInt8>) -> [UInt8]? {
        if let result = text.withContiguousStorageIfAvailable({ decode(buffer: $0) }) { return result }
        return Array(text).withUnsafeBufferPointer { decode(buffer: $0) }
    }

    /// `decode` on contiguous bytes: four characters to three bytes at a time; a character
    /// outside the alphabet (0xFF in the table, so a high bit set) anywhere refuses the whole text.
    package static func decode(buffer text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        let count = text.count
        let tail = count % 4
        if tail == 1 { return nil }
        let outputCount = count / 4 * 3 + (tail == 0 ? 0 : tail - 1)
        var valid = true
        let output = [UInt8](unsafeUninitializedCapacity: outputCount) { output, initialized in
            values.withUnsafeBufferPointer { values in
                var input = 0
                var written = 0
                // every value or'ed together: one bit 6 or 7 set means a character not in the alphabet
                var seen: UInt8 = 0
                while input + 4 <= count {
                    let a = values[Int(text[input])]
                    let b = values[Int(text[input + 1])]
                    let c = values[Int(text[input + 2])]
                    let d = values[Int(text[input + 3])]
                    seen |= a | b | c | d
                    output[written] = a << 2 | b >> 4
                    output[written + 1] = b << 4 | c >> 2
                    output[written + 2] = c << 6 | d
                    input += 4
                    written += 3
                }
                // The last 2 or 3 characters: 1 or 2 bytes, and the bits left over in the last
                // character (4 or 2 of them) must be zero (one encoding per byte string).
                var leftover: UInt8 = 0
                if tail >= 2 {
                    let a = values[Int(text[input])]
                    let b = values[Int(text[input + 1])]
                    seen |= a | b
                    output[written] = a << 2 | b >> 4
                    written += 1
                    if tail == 2 {
                        leftover = b & 0x0F
                    } else {
                        let c = values[Int(text[input + 2])]
                        seen |= c
                        output[written] = b << 4 | c >> 2
                        written += 1
                        leftover = c & 0x03
                    }
                }
                valid = seen & 0xC0 == 0 && leftover == 0
                initialized = written
            }
        }
        return valid ? output : nil
    }

    package static func encode(_ bytes: some Collection<UInt8>) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count * 4 + 2) / 3)
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in bytes {
            accumulator = (accumulator << 8) | UInt32(byte)
            bits += 8
            while bits >= 6 {
                bits -= 6
                output.append(alphabet[Int((accumulator >> UInt32(bits)) & 63)])
            }
            accumulator &= (1 << UInt32(bits)) - 1
        }
        if bits > 0 { output.append(alphabet[Int((accumulator << UInt32(6 - bits)) & 63)]) }
        return output
    }

    package static func encodeString(_ bytes: some Collection<UInt8>) -> String {
        String(decoding: encode(bytes), as: UTF8.self)
    }
}
