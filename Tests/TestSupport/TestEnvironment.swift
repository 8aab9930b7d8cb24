import Foundation
import Synchronization
import NIOCore
import NIOPosix
import PostgresClient
import RedisClient

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
/// test's server there (nor later shut that one down).
public func freePort() throws -> Int {
    for _ in 0..<100 {
        let port = try kernelFreePort()
        if claimedPorts.withLock({ $0.insert(port).inserted }) { return port }
    }
    throw POSIXError(.EADDRINUSE)
}

private let claimedPorts = Mutex<Set<Int>>([])

/// A port nothing listens on right now (the kernel picks it).
private func kernelFreePort() throws -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw POSIXError(.EMFILE) }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            guard bind(descriptor, pointer, length) == 0 else { return -1 }
            return getsockname(descriptor, pointer, &length)
        }
    }
    guard bound == 0 else { throw POSIXError(.EADDRINUSE) }
    return Int(UInt16(bigEndian: address.sin_port))
}
