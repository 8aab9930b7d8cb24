import CivilTime
public import Foundation

/// A statement parameter. Sent in libpq's text format, never spliced into SQL.
public enum PostgresValue: Sendable, Hashable {
    case text(String)
    case int(Int)
    case bool(Bool)
    case double(Double)
    case timestamp(Date)
    /// A `text[]` parameter, for multi-row statements over `unnest(...)`.
    case textArray([String?])
    /// A `bigint[]` parameter.
    case intArray([Int?])
    case null

    /// The text form libpq sends, or nil for SQL NULL.
    func encoded() throws -> String? {
        switch self {
        case .text(let value):
            guard !value.utf8.contains(0) else { throw PostgresError.invalidParameter("text holds a NUL byte") }
            return value
        case .int(let value): return String(value)
        case .bool(let value): return value ? "t" : "f"
        case .double(let value): return String(value)
        case .timestamp(let date): return PostgresTimestamp.format(date)
        case .textArray(let values):
            var out = "{"
            for (index, value) in values.enumerated() {
                if index > 0 { out += "," }
                guard let value else {
                    out += "NULL"
                    continue
                }
                guard !value.utf8.contains(0) else { throw PostgresError.invalidParameter("text holds a NUL byte") }
                out += "\""
                for character in value.unicodeScalars {
                    if character == "\\" || character == "\"" { out += "\\" }
                    out.unicodeScalars.append(character)
                }
                out += "\""
            }
            return out + "}"
        case .intArray(let values):
            return "{" + values.map { $0.map(String.init) ?? "NULL" }.joined(separator: ",") + "}"
        case .null: return nil
        }
    }
}

/// One cell of a result row, as the text libpq returned, decoded on demand.
public struct PostgresCell: Sendable, Hashable {
    public let raw: String?

    public init(raw: String?) { self.raw = raw }

    public var isNull: Bool { raw == nil }
    public var string: String? { raw }
    public var int: Int? { raw.flatMap { Int($0) } }
    public var double: Double? { raw.flatMap { Double($0) } }
    public var bool: Bool? {
        switch raw {
        case "t", "true": return true
        case "f", "false": return false
        default: return nil
        }
    }
    public var date: Date? { raw.flatMap(PostgresTimestamp.parse) }
}

public struct PostgresRow: Sendable {
    public let columns: [String]
    public let cells: [PostgresCell]

    public subscript(index: Int) -> PostgresCell { cells[index] }
    public subscript(column: String) -> PostgresCell {
        guard let index = columns.firstIndex(of: column) else { return PostgresCell(raw: nil) }
        return cells[index]
    }
}

/// Timestamps cross the wire as text in UTC (each connection sets `TimeZone` to UTC).
enum PostgresTimestamp {
    static func format(_ date: Date) -> String {
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        var seconds = micros / 1_000_000
        var fraction = micros % 1_000_000
        if fraction < 0 {
            fraction += 1_000_000
            seconds -= 1
        }
        let civil = CivilTime.dateTime(unixSeconds: seconds)
        let (year, month, day, hour, minute, second) = (civil.year, civil.month, civil.day, civil.hour, civil.minute, civil.second)
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2)) \(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2)).\(pad(fraction, 6))+00"
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM]]` as Postgres prints timestamptz.
    static func parse(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 19 else { return nil }
        func number(_ range: Range<Int>) -> Int64? {
            var value: Int64 = 0
            for index in range {
                guard index < bytes.count, (48...57).contains(bytes[index]) else { return nil }
                value = value * 10 + Int64(bytes[index] - 48)
            }
            return value
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19)
        else { return nil }
        var index = 19
        var micros: Int64 = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            var digits = 0
            while index < bytes.count, (48...57).contains(bytes[index]) {
                if digits < 6 {
                    micros = micros * 10 + Int64(bytes[index] - 48)
                    digits += 1
                }
                index += 1
            }
            while digits < 6 {
                micros *= 10
                digits += 1
            }
        }
        var offsetSeconds: Int64 = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            let sign: Int64 = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            guard let hours = number((index + 1)..<(index + 3)) else { return nil }
            var minutes: Int64 = 0
            if index + 5 < bytes.count + 1, index + 3 < bytes.count, bytes[index + 3] == UInt8(ascii: ":") {
                minutes = number((index + 4)..<(index + 6)) ?? 0
            }
            offsetSeconds = sign * (hours * 3600 + minutes * 60)
        }
        let days = CivilTime.days(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        return Date(timeIntervalSince1970: Double(seconds) + Double(micros) / 1_000_000)
    }
}
