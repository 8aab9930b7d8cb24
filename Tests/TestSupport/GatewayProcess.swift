import Foundation
public import NIOHTTP1

/// The real `gateway` executable on a free port, for what an in-process server cannot show: that
/// the process survives hostile input, and how it stops on SIGTERM.
public final class GatewayProcess: Sendable {
    public let process: Subprocess
    public let port: Int
    public static let adminToken = GatewayHarness.adminToken
    public static let webhookSecret = GatewayHarness.webhookSecret

    private init(process: Subprocess, port: Int) {
        self.process = process
        self.port = port
    }

    /// Starts it against `redisURL` and waits (generously) until `/readyz` answers 200.
    public static func start(redisURL: String, environment: [String: String] = [:]) async throws -> GatewayProcess {
        let port = try freePort()
        var settings = [
            "REDIS_URL": redisURL, "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": String(port),
            "ADMIN_TOKEN": adminToken, "WEBHOOK_SECRET": webhookSecret, "ADMISSION_SECRET": GatewayHarness.admissionSecret, "RESERVE_RATE_LIMIT": "0",
            "LOG_LEVEL": "error",
            "CONSUMER_AUTH": "trusted",
            // As in GatewayHarness: no shedding on a machine loaded by design, unless a test asks.
            "REDIS_SHED_AFTER_MS": "600000", "REDIS_MAX_PENDING": "1000000", "REDIS_COMMAND_TIMEOUT_MS": "120000",
        ]
        for (key, value) in environment { settings[key] = value }
        let process = try ProductProcess.start("gateway", [], environment: settings)
        let gateway = GatewayProcess(process: process, port: port)
        let ready = try await eventually(interval: .milliseconds(50)) {
            guard process.isRunning else { return true }
            return (try? await gateway.request(.GET, "/readyz"))?.status == 200
        }
        guard ready, process.isRunning else { throw HarnessError("the gateway did not become ready on :\(port)") }
        return gateway
    }

    public func request(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil
    ) async throws -> TestHTTPResponse {
        try await HTTPTestClient.request(port: port, method: method, path: path, headers: headers, body: body)
    }

    /// The same, retried (generously) when the connection is closed before an answer: for setup
    /// calls to a gateway started with very short timeouts.
    public func requestRetrying(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil
    ) async throws -> TestHTTPResponse {
        var lastError: (any Error)?
        for _ in 0..<50 {
            do {
                return try await request(method, path, headers: headers, body: body)
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw lastError ?? HarnessError("no answer")
    }

    public var admin: [(String, String)] { [("Authorization", "Bearer \(Self.adminToken)")] }

    public var isRunning: Bool { process.isRunning }

    /// SIGTERM, then waits for the exit; returns the status (or throws after `timeout`).
    public func terminate(timeout: Duration = .seconds(120)) async throws -> Int32 {
        process.signal(SIGTERM)
        return try await process.finish(timeout: timeout).status
    }
}
