import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

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

/// Reservation ids: `NN-<26 characters>`, NN being the basket's partition (so a lookup by id
/// finds the right keys) and the rest 128 bits from the system's cryptographic random source
/// (`getrandom`), in lowercase base 32. The id is what lets its holder read and cancel the
/// reservation, so nothing in it is predictable from another id: no counter, no per-process
/// part. 29 characters, within the id format. Collisions would need 2^64 ids.
public final class ReservationIdGenerator: Sendable {
    /// Random bytes fetched 4 KiB at a time: one `getrandom` per 256 ids instead of two per id
    /// (a syscall each was a visible share of a reservation's CPU).
    private let pool = Mutex(RandomPool())

    public init() {}

    static let alphabet = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)

    public func next(partition: Int) -> String {
        let (high, low) = pool.withLock { $0.next128() }
        var bytes = [UInt8](repeating: 0, count: 29)
        bytes[0] = UInt8(ascii: "0") + UInt8(partition / 10 % 10)
        bytes[1] = UInt8(ascii: "0") + UInt8(partition % 10)
        bytes[2] = UInt8(ascii: "-")
        // 26 base-32 digits = 130 bits: the top two digits take 64 bits each side by side.
        var value = (high, low)
        for index in stride(from: 28, through: 3, by: -1) {
            let digit = Int(value.1 & 31)
            bytes[index] = Self.alphabet[digit]
            value.1 = (value.1 >> 5) | ((value.0 & 31) << 59)
            value.0 >>= 5
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The partition a reservation id names, or nil if the id is not one we issue.
    public static func partition(of reservationId: String) -> Int? {
        let utf8 = Array(reservationId.utf8.prefix(3))
        guard utf8.count == 3, utf8[2] == UInt8(ascii: "-"),
            (48...57).contains(utf8[0]), (48...57).contains(utf8[1])
        else { return nil }
        let value = Int(utf8[0] - 48) * 10 + Int(utf8[1] - 48)
        return value < Keyspace.partitionCount ? value : nil
    }
}

/// Bytes from the kernel's cryptographic random source (`/dev/urandom`, the same generator as
/// `getrandom`, which Swift's Glibc module does not declare), handed out once each.
struct RandomPool: ~Copyable {
    private var words = [UInt64](repeating: 0, count: 512)
    private var used = 512
    private var device: Int32 = -1

    mutating func next128() -> (UInt64, UInt64) {
        if used + 2 > words.count { refill() }
        defer {
            // a handed-out value is not kept in memory longer than needed
            words[used] = 0
            words[used + 1] = 0
            used += 2
        }
        return (words[used], words[used + 1])
    }

    private mutating func refill() {
        if device < 0 { device = open("/dev/urandom", O_RDONLY | O_CLOEXEC) }
        let device = self.device
        let complete = words.withUnsafeMutableBytes { raw -> Bool in
            var filled = 0
            while filled < raw.count {
                let count = read(device, raw.baseAddress! + filled, raw.count - filled)
                if count > 0 {
                    filled += count
                } else if count == 0 || errno != EINTR {
                    return false
                }
            }
            return true
        }
        if !complete {
            // No /dev/urandom (a bare chroot): the standard library's generator, a word at a time.
            var generator = SystemRandomNumberGenerator()
            for index in words.indices { words[index] = generator.next() }
        }
        used = 0
    }

    deinit {
        if device >= 0 { close(device) }
    }
}
