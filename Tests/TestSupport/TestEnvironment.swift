public import Foundation
import NIOCore
public import NIOPosix
public import PostgresClient
public import RedisClient
import Synchronization

/// What integration tests connect to. `REDIS_URL` and `DATABASE_URL` come from the environment
/// (scripts/test.sh sets them). Outside CI the local defaults are used; under `CI=true` a missing
/// variable is an error naming it, never a skip.
public enum TestEnvironment {
    public struct Missing: Error, CustomStringConvertible {
        public let variable: String
        public var description: String { "\(variable) is not set (CI=true requires it; run the tests through scripts/test.sh)" }
    }

    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    public static func variable(
        _ name: String, default fallback: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> String {
        if let value = environment[name], !value.isEmpty { return value }
        if environment["CI"] == "true" { throw Missing(variable: name) }
        return fallback
    }

    public static func redisURL() throws -> String {
        try variable("REDIS_URL", default: "redis://127.0.0.1:6379")
    }

    public static func databaseURL() throws -> String {
        try variable("DATABASE_URL", default: "postgres://postgres@127.0.0.1:5432/reservations")
    }

    public static let eventLoopGroup: MultiThreadedEventLoopGroup = .singleton

    /// A client of the shared test Redis; fails (does not skip) when Redis does not answer.
    public static func redisClient() async throws -> RedisClient {
        let configuration = try RedisConfiguration(url: redisURL())
        let client = RedisClient(configuration: configuration, eventLoopGroup: eventLoopGroup)
        do {
            _ = try await client.send("PING")
        } catch {
            throw ServiceUnavailable(variable: "REDIS_URL", reason: "\(error)")
        }
        return client
    }

    public static func postgresClient(size: Int = 4) async throws -> PostgresClient {
        let client = PostgresClient(url: try databaseURL(), size: size)
        do {
            try await client.execute("SELECT 1")
        } catch {
            throw ServiceUnavailable(variable: "DATABASE_URL", reason: "\(error)")
        }
        return client
    }

    public struct ServiceUnavailable: Error, CustomStringConvertible {
        public let variable: String
        public let reason: String
        public var description: String { "the service at \(variable) does not answer: \(reason)" }
    }

    /// A name no other test (or earlier run) uses.
    public static func uniqueId(_ prefix: String = "t") -> String {
        prefix + "-" + UUID().uuidString.lowercased().prefix(18)
    }
}

/// Polls `condition` until it holds or `timeout` passes; tests wait for conditions, not clocks.
/// The limit is generous on purpose (a cold build and CPU hogs on two cores slow everything by
/// several times): it only decides how long a real failure takes to report, never whether a
/// correct run passes.
public func eventually(
    timeout: Duration = .seconds(120), interval: Duration = .milliseconds(20),
    _ condition: () async throws -> Bool
) async throws -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while clock.now < deadline {
        if (try? await condition()) == true { return true }
        try await Task.sleep(for: interval)
    }
    return try await condition()
}

/// A port nothing listens on now and that no other test of this process has been given: a
/// test that stops its server and starts it again on the same port must not find another
/// test's server there (nor later shut that one down). Ports come from below the kernel's
/// ephemeral range, so the thousands of client sockets the suite opens can never take a port a
/// test server is about to bind (or bind again after a restart).
public func freePort() throws -> Int {
    let ephemeralStart = ephemeralRange().lowerBound
    let range = 10_000..<max(10_001, min(ephemeralStart, 32_768))
    for _ in 0..<1_000 {
        let port = Int.random(in: range)
        guard isFree(port) else { continue }
        if claimedPorts.withLock({ $0.insert(port).inserted }) { return port }
    }
    throw POSIXError(.EADDRINUSE)
}

/// The kernel's ephemeral port range (Linux), 32768...60999 if it cannot be read.
private func ephemeralRange() -> ClosedRange<Int> {
    guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8) else { return 32_768...60_999 }
    let numbers = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) }
    guard numbers.count == 2, numbers[0] <= numbers[1] else { return 32_768...60_999 }
    return numbers[0]...numbers[1]
}

private let claimedPorts = Mutex<Set<Int>>([])

/// Whether `port` can be bound on 127.0.0.1 right now.
private func isFree(_ port: Int) -> Bool {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { return false }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    return bound == 0
}
