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
        let (year, month, day) = (civil.year, civil.month, civil.day)
        var out: [UInt8] = []
        out.reserveCapacity(24)
        func digits(_ value: Int64, _ width: Int) {
            var divisor: Int64 = 1
            for _ in 1..<width { divisor *= 10 }
            var remaining = value
            while divisor > 0 {
                out.append(UInt8(48 + (remaining / divisor) % 10))
                remaining %= divisor
                divisor /= 10
            }
        }
        digits(year, 4)
        out.append(UInt8(ascii: "-"))
        digits(month, 2)
        out.append(UInt8(ascii: "-"))
        digits(day, 2)
        out.append(UInt8(ascii: "T"))
        digits(rest / 3600, 2)
        out.append(UInt8(ascii: ":"))
        digits((rest % 3600) / 60, 2)
        out.append(UInt8(ascii: ":"))
        digits(rest % 60, 2)
        out.append(UInt8(ascii: "."))
        digits(millis, 3)
        out.append(UInt8(ascii: "Z"))
        return String(decoding: out, as: UTF8.self)
    }
}
