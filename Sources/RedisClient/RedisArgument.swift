public import NIOCore

/// One argument of a Redis command. Binary safe: `.bytes` may hold any octets, NUL included.
public enum RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case string(String)
    case bytes([UInt8])
    case int(Int)

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
}

extension RedisArgument {
    /// The argument's length in bytes on the wire.
    @inlinable
    var encodedLength: Int {
        switch self {
        case .string(let text): return text.utf8.count
        case .bytes(let bytes): return bytes.count
        case .int(let value): return ByteBuffer.decimalLength(value)
        }
    }
}

/// Stores bytes one after another into space already reserved and counted.
@usableFromInline
struct RESPOutput {
    @usableFromInline let base: UnsafeMutablePointer<UInt8>
    @usableFromInline var count = 0

    @inlinable
    init(base: UnsafeMutablePointer<UInt8>) { self.base = base }

    @inlinable
    mutating func byte(_ value: UInt8) {
        base[count] = value
        count += 1
    }

    @inlinable
    mutating func crlf() {
        base[count] = 13
        base[count + 1] = 10
        count += 2
    }

    @inlinable
    mutating func bytes(_ buffer: UnsafeBufferPointer<UInt8>) {
        guard let source = buffer.baseAddress, buffer.count > 0 else { return }
        (base + count).update(from: source, count: buffer.count)
        count += buffer.count
    }

    @inlinable
    mutating func decimal(_ value: Int) {
        if value < 0 { byte(UInt8(ascii: "-")) }
        var remaining = value.magnitude
        var index = count + ByteBuffer.decimalLength(remaining)
        count = index
        repeat {
            index -= 1
            base[index] = UInt8(ascii: "0") + UInt8(remaining % 10)
            remaining /= 10
        } while remaining > 0
    }
}

extension ByteBuffer {
    /// Appends one command in RESP (`*argc`, then `$len` and the bytes of each argument). The
    /// exact size is counted first and the bytes stored in one pass into space reserved once:
    /// a reserve call has 16 arguments, and writing them as ~80 small checked writes was most
    /// of what the client spent per command.
    @inlinable
    mutating func writeRESPCommand(_ arguments: [RedisArgument]) {
        var total = 3 + Self.decimalLength(arguments.count)
        for argument in arguments {
            let length = argument.encodedLength
            total += 5 + Self.decimalLength(length) + length
        }
        writeWithUnsafeMutableBytes(minimumWritableBytes: total) { raw in
            var output = RESPOutput(base: raw.baseAddress!.assumingMemoryBound(to: UInt8.self))
            output.byte(UInt8(ascii: "*"))
            output.decimal(arguments.count)
            output.crlf()
            for argument in arguments {
                output.byte(UInt8(ascii: "$"))
                output.decimal(argument.encodedLength)
                output.crlf()
                switch argument {
                case .string(let text):
                    var text = text
                    text.withUTF8 { output.bytes($0) }
                case .bytes(let bytes):
                    bytes.withUnsafeBufferPointer { output.bytes($0) }
                case .int(let value):
                    // Integers are sent as their decimal text, which is what Redis expects.
                    output.decimal(value)
                }
                output.crlf()
            }
            precondition(output.count == total, "RESP length miscounted")
            return total
        }
    }

    /// How many bytes `value` takes in decimal, its sign included.
    @inlinable
    static func decimalLength(_ value: Int) -> Int {
        (value < 0 ? 1 : 0) + decimalLength(value.magnitude)
    }

    @inlinable
    static func decimalLength(_ value: UInt) -> Int {
        var length = 1
        var remaining = value
        while remaining >= 10 {
            remaining /= 10
            length += 1
        }
        return length
    }
}
