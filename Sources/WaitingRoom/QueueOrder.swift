import Crypto
import ReservationCore

/// The pre-queue's draw: a keyed pseudo-random permutation of the join numbers 1...n, the key
/// being the seed the room's first use after the opening made (random, unknown before it). A
/// balanced Feistel network over the smallest even number of bits that holds n, with SHA-256 of
/// (seed, round, half) as its round function and cycle walking down to n: a place costs a few
/// hashes whatever n is, so the draw itself is O(1) at the opening (no list is shuffled) and
/// anyone holding the published seed can recompute every place.
public struct QueueOrder: Sendable {
    public let count: Int64
    private let seed: [UInt8]
    private let halfBits: Int
    static let rounds = 8

    /// nil when `seedHex` is not 64 hex digits or `count` < 1.
    public init?(seedHex: String, count: Int64) {
        guard count >= 1, RoomRecord.isHex(seedHex, count: 64), let seed = Digits.bytes(hex: seedHex.utf8) else { return nil }
        self.count = count
        self.seed = seed
        var bits = 2
        while bits < 62 && (Int64(1) << bits) < count { bits += 2 }
        halfBits = bits / 2
    }

    /// The place (1...count) of join number `index` (1...count).
    public func place(ofJoin index: Int64) -> Int64 {
        precondition(index >= 1 && index <= count, "a join number outside the pre-queue")
        var value = UInt64(index - 1)
        // A permutation of 0..<2^bits maps each cycle onto itself, so walking from a value inside
        // 0..<count comes back inside it; at most 4 steps on average (2^bits < 4 * count).
        repeat { value = permute(value) } while value >= UInt64(count)
        return Int64(value) + 1
    }

    private func permute(_ value: UInt64) -> UInt64 {
        let mask = (UInt64(1) << halfBits) - 1
        var left = value >> halfBits
        var right = value & mask
        for round in 0..<Self.rounds {
            let next = left ^ (roundValue(UInt8(round), right) & mask)
            left = right
            right = next
        }
        return (left << halfBits) | right
    }

    private func roundValue(_ round: UInt8, _ half: UInt64) -> UInt64 {
        var hasher = SHA256()
        hasher.update(data: seed)
        var input: [UInt8] = [round]
        withUnsafeBytes(of: half.littleEndian) { input.append(contentsOf: $0) }
        hasher.update(data: input)
        var value: UInt64 = 0
        for byte in hasher.finalize().prefix(8) { value = value << 8 | UInt64(byte) }
        return value
    }
}
