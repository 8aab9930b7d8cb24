/// A decoded Redis reply. Values are plain Swift data; nothing here points into C memory.
public enum RedisValue: Sendable, Hashable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case array([RedisValue])
    case null

    /// The value as text: bulk strings decoded as UTF-8, statuses, and integers.
    public var string: String? {
        switch self {
        case .bulk(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .status(let text): return text
        case .integer(let value): return String(value)
        default: return nil
        }
    }

    /// The value as an integer: integer replies, and bulk strings holding a decimal integer.
    public var int: Int? {
        switch self {
        case .integer(let value): return Int(value)
        case .bulk(let bytes): return Int(String(decoding: bytes, as: UTF8.self))
        case .status(let text): return Int(text)
        default: return nil
        }
    }

    public var bytes: [UInt8]? {
        if case .bulk(let bytes) = self { return bytes }
        return nil
    }

    public var array: [RedisValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}
