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

    private static func decode(buffer text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        let count = text.count
        if count % 4 == 1 { return nil }
        let outputCount = count * 3 / 4
        var valid = true
        let output = [UInt8](unsafeUninitializedCapacity: outputCount) { output, initialized in
            var accumulator: UInt32 = 0
            var bits: UInt32 = 0
            var written = 0
            values.withUnsafeBufferPointer { values in
                for byte in text {
                    let value = values[Int(byte)]
                    if value == 0xFF {
                        valid = false
                        break
                    }
                    accumulator = (accumulator << 6) | UInt32(value)
                    bits += 6
                    if bits >= 8 {
                        bits -= 8
                        output[written] = UInt8(truncatingIfNeeded: accumulator >> bits)
                        written += 1
                        accumulator &= (1 << bits) - 1
                    }
                }
            }
            // What is left (2 or 4 bits, or none) is padding inside the last character: zero.
            if accumulator != 0 { valid = false }
            initialized = written
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
