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
