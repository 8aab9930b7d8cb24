import RedisClient

/// One stream entry: where it came from (for XACK) and its fields.
public struct StreamEntry: Sendable {
    public let stream: String
    public let id: String
    public let fields: [String: String]

    public var type: String? { fields["type"] }

    /// Parses `[[stream, [[id, [field, value, ...]], ...]], ...]` (XREADGROUP). Entries whose
    /// fields are nil (deleted while pending) come back with no fields, to be acknowledged.
    static func parseRead(_ reply: RedisValue) -> [StreamEntry] {
        var entries: [StreamEntry] = []
        for stream in reply.array ?? [] {
            guard let parts = stream.array, parts.count == 2, let key = parts[0].string else { continue }
            entries.append(contentsOf: parseEntries(key, parts[1]))
        }
        return entries
    }

    static func parseEntries(_ stream: String, _ list: RedisValue) -> [StreamEntry] {
        var entries: [StreamEntry] = []
        for item in list.array ?? [] {
            guard let pair = item.array, pair.count == 2, let id = pair[0].string else { continue }
            var fields: [String: String] = [:]
            if let values = pair[1].array {
                var index = 0
                while index + 1 < values.count {
                    if let name = values[index].string { fields[name] = values[index + 1].string ?? "" }
                    index += 2
                }
            }
            entries.append(StreamEntry(stream: stream, id: id, fields: fields))
        }
        return entries
    }
}

/// Stream ids (`<ms>-<seq>`) in numeric order.
struct StreamID: Comparable, Hashable, Sendable, CustomStringConvertible {
    let milliseconds: UInt64
    let sequence: UInt64

    init?(_ text: String) {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let ms = UInt64(parts[0]), let seq = UInt64(parts[1]) else { return nil }
        milliseconds = ms
        sequence = seq
    }

    static func < (lhs: StreamID, rhs: StreamID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }

    var description: String { "\(milliseconds)-\(sequence)" }
}
