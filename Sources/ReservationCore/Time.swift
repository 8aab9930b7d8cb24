import CivilTime

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The wall clock, in Unix milliseconds.
public enum WallClock {
    public static func nowMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    public static func nowSeconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec)
    }
}

/// RFC 3339 timestamps in UTC with millisecond precision, from Unix milliseconds.
public enum RFC3339 {
    public static func format(milliseconds: Int64) -> String {
        var seconds = milliseconds / 1000
        var millis = milliseconds % 1000
        if millis < 0 {
            millis += 1000
            seconds -= 1
        }
        let civil = CivilTime.dateTime(unixSeconds: seconds)
        let rest = civil.hour * 3600 + civil.minute * 60 + civil.second
        // (Four digits: a year outside 0...9999 is not a time this product writes; clamped, it
        // cannot make a digit negative.)
        let (year, month, day) = (min(max(civil.year, 0), 9999), civil.month, civil.day)
        // One allocation: the text is written straight into the string's storage.
        return String(unsafeUninitializedCapacity: 24) { out in
            var count = 0
            func digits(_ value: Int64, _ width: Int) {
                var divisor: Int64 = 1
                for _ in 1..<width { divisor *= 10 }
                var remaining = value
                while divisor > 0 {
                    out[count] = UInt8(48 + (remaining / divisor) % 10)
                    count += 1
                    remaining %= divisor
                    divisor /= 10
                }
            }
            func byte(_ value: UInt8) {
                out[count] = value
                count += 1
            }
            digits(year, 4)
            byte(UInt8(ascii: "-"))
            digits(month, 2)
            byte(UInt8(ascii: "-"))
            digits(day, 2)
            byte(UInt8(ascii: "T"))
            digits(rest / 3600, 2)
            byte(UInt8(ascii: ":"))
            digits((rest % 3600) / 60, 2)
            byte(UInt8(ascii: ":"))
            digits(rest % 60, 2)
            byte(UInt8(ascii: "."))
            digits(millis, 3)
            byte(UInt8(ascii: "Z"))
            return count
        }
    }
}

extension RFC3339 {
    /// Parses an RFC 3339 date-time (`2026-12-24T10:00:00Z`, `...:00.250+01:00`) into Unix
    /// milliseconds; nil for anything else, a date that does not exist, or a time outside the
    /// years 1970...9999. Every field is range-checked before any arithmetic (no overflow).
    public static func parse(_ text: String) -> Int64? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 20, bytes.count <= 40 else { return nil }
        var index = 0
        func number(_ width: Int) -> Int64? {
            guard index + width <= bytes.count else { return nil }
            var value: Int64 = 0
            for byte in bytes[index..<index + width] {
                guard (48...57).contains(byte) else { return nil }
                value = value * 10 + Int64(byte - 48)
            }
            index += width
            return value
        }
        func expect(_ characters: String) -> Bool {
            guard index < bytes.count, characters.utf8.contains(bytes[index]) else { return false }
            index += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2), expect("Tt"),
            let hour = number(2), expect(":"), let minute = number(2), expect(":"), let second = number(2)
        else { return nil }
        guard (1970...9999).contains(year), (1...12).contains(month), hour <= 23, minute <= 59, second <= 59 else { return nil }
        let daysInMonth: [Int64] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
        guard day >= 1, day <= daysInMonth[Int(month - 1)] + (month == 2 && leap ? 1 : 0) else { return nil }
        var millis: Int64 = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            let start = index
            while index < bytes.count, (48...57).contains(bytes[index]) {
                if index - start < 3 { millis = millis * 10 + Int64(bytes[index] - 48) }
                index += 1
            }
            let digits = index - start
            guard digits >= 1, digits <= 9 else { return nil }
            // (a range like 4..<3 traps: pad only what is short of milliseconds)
            if digits < 3 { for _ in 0..<(3 - digits) { millis *= 10 } }
        }
        var offsetSeconds: Int64 = 0
        guard index < bytes.count else { return nil }
        if bytes[index] == UInt8(ascii: "Z") || bytes[index] == UInt8(ascii: "z") {
            index += 1
        } else {
            let sign: Int64 = bytes[index] == UInt8(ascii: "+") ? 1 : bytes[index] == UInt8(ascii: "-") ? -1 : 0
            guard sign != 0 else { return nil }
            index += 1
            guard let hours = number(2), expect(":"), let minutes = number(2), hours <= 23, minutes <= 59 else { return nil }
            offsetSeconds = sign * (hours * 3600 + minutes * 60)
        }
        guard index == bytes.count else { return nil }
        let days = CivilTime.days(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        // 1970 to 9999 in UTC, whatever the offset (an offset can push a local 9999 past it)
        guard seconds >= 0, seconds <= 253_402_300_799 else { return nil }
        return seconds * 1000 + millis
    }
}
