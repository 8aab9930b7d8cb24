public import NIOCore

/// One argument of a Redis command. Binary safe: `.bytes` may hold any octets, NUL included.
public enum RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case string(String)
    case bytes([UInt8])
    case int(Int)

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
}

extension ByteBuffer {
    /// Appends one command in RESP (`*argc`, then `$len` and the bytes of each argument).
    @inlinable
    mutating func writeRESPCommand(_ arguments: [RedisArgument]) {
        writeInteger(UInt8(ascii: "*"))
        writeASCIIDecimal(arguments.count)
        writeCRLF()
        for argument in arguments {
            switch argument {
            case .string(var text):
                writeInteger(UInt8(ascii: "$"))
                writeASCIIDecimal(text.utf8.count)
                writeCRLF()
                text.withUTF8 { _ = writeBytes($0) }
            case .bytes(let bytes):
                writeInteger(UInt8(ascii: "$"))
                writeASCIIDecimal(bytes.count)
                writeCRLF()
                writeBytes(bytes)
            case .int(let value):
                // Integers are sent as their decimal text, which is what Redis expects (its
                // length counted first, so no scratch buffer is allocated).
                writeInteger(UInt8(ascii: "$"))
                writeASCIIDecimal(Self.decimalLength(value))
                writeCRLF()
                writeASCIIDecimal(value)
            }
            writeCRLF()
        }
    }

    /// How many bytes `writeASCIIDecimal(value)` writes.
    @inlinable
    static func decimalLength(_ value: Int) -> Int {
        var length = value < 0 ? 2 : 1
        var remaining = value.magnitude
        while remaining >= 10 {
            remaining /= 10
            length += 1
        }
        return length
    }

    @inlinable
    mutating func writeCRLF() {
        writeInteger(UInt16(0x0D0A))  // "\r\n" in big-endian order
    }

    /// Writes `value` as decimal ASCII without going through `String`.
    @inlinable
    mutating func writeASCIIDecimal(_ value: Int) {
        if value < 0 {
            writeInteger(UInt8(ascii: "-"))
            writeASCIIDecimal(UInt(value.magnitude))
        } else {
            writeASCIIDecimal(UInt(value))
        }
    }

    @inlinable
    mutating func writeASCIIDecimal(_ value: UInt) {
        if value < 10 {
            writeInteger(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var scratch: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes hold any UInt64 in decimal
        var remaining = value
        withUnsafeMutableBytes(of: &scratch) { raw in
            var index = raw.count
            while remaining > 0 {
                index -= 1
                raw[index] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
            }
            writeBytes(UnsafeRawBufferPointer(rebasing: raw[index...]))
        }
    }
}
