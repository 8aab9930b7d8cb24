import Synchronization

/// The contract's id format: 1 to 128 characters of `[A-Za-z0-9._:@-]`.
public enum Identifier {
    public static func isValid(_ id: String) -> Bool {
        let utf8 = id.utf8
        guard !utf8.isEmpty, utf8.count <= 128 else { return false }
        for byte in utf8 where !isIdByte(byte) { return false }
        return true
    }

    @inline(__always)
    static func isIdByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    /// `Idempotency-Key` and webhook event ids: 1 to 255 visible ASCII characters.
    public static func isValidKey(_ key: String) -> Bool {
        let utf8 = key.utf8
        guard !utf8.isEmpty, utf8.count <= 255 else { return false }
        for byte in utf8 where byte < 0x21 || byte > 0x7E { return false }
        return true
    }
}

/// Reservation ids: `NN-<instance>-<counter>`, NN being the basket's partition (so a lookup by
/// id finds the right keys), `<instance>` 64 random bits drawn when the process starts, and
/// `<counter>` a per-process sequence. Unique across gateway instances, and short enough
/// (at most 3 + 13 + 1 + 13 characters) to stay within the id format.
public final class ReservationIdGenerator: Sendable {
    private let instance: String
    private let counter = Atomic<UInt64>(0)

    public init() {
        var generator = SystemRandomNumberGenerator()
        self.instance = String(generator.next() as UInt64, radix: 36)
    }

    public func next(partition: Int) -> String {
        let sequence = counter.wrappingAdd(1, ordering: .relaxed).newValue
        let prefix = partition < 10 ? "0\(partition)" : "\(partition)"
        return prefix + "-" + instance + "-" + String(sequence, radix: 36)
    }

    /// The partition a reservation id names, or nil if the id is not one we issue.
    public static func partition(of reservationId: String) -> Int? {
        let utf8 = Array(reservationId.utf8.prefix(3))
        guard utf8.count == 3, utf8[2] == UInt8(ascii: "-"),
              (48...57).contains(utf8[0]), (48...57).contains(utf8[1]) else { return nil }
        let value = Int(utf8[0] - 48) * 10 + Int(utf8[1] - 48)
        return value < Keyspace.partitionCount ? value : nil
    }
}
