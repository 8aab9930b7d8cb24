/// Redis Cluster's key to slot mapping: CRC16 (XMODEM) of the key's hash tag (the text between
/// the first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
public enum RedisHashSlot {
    public static let count = 16_384

    public static func slot(of key: String) -> Int {
        let bytes = Array(key.utf8)
        var tag = bytes[...]
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            tag = bytes[(open + 1)..<close]
        }
        return Int(crc16(tag) % UInt16(count))
    }

    static func crc16(_ bytes: ArraySlice<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 {
                crc = (crc & 0x8000) != 0 ? (crc << 1) ^ 0x1021 : crc << 1
            }
        }
        return crc
    }
}
