public import Foundation

/// A redis-server of a test's own (own port, own data folder), for tests that stop, kill or
/// flush Redis without disturbing the rest of the suite. It runs daemonized with a pid file, and
/// is stopped with the SHUTDOWN command or SIGKILL, never through Foundation's `Process` waiting
/// (a child of the test runner may inherit a signal mask that blocks SIGTERM).
public final class RedisServerProcess: @unchecked Sendable {
    // @unchecked Sendable: only immutable state; the server itself is shared through its port.
    public private(set) var port: Int
    public let directory: URL
    private let appendOnly: Bool
    private var started = false

    public var url: String { "redis://127.0.0.1:\(port)" }
    private var pidFile: String { directory.appendingPathComponent("redis.pid").path }

    public init(appendOnly: Bool = true) throws {
        self.port = try freePort()
        self.directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("redis-test-\(port)-\(UUID().uuidString.prefix(8))")
        self.appendOnly = appendOnly
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// Starts the server. The first start retries on a new port if the one picked was taken in
    /// the meantime (another test's server can be handed the same free port); restarts keep it.
    public func start() async throws {
        var attempts = started ? 1 : 3
        while true {
            do {
                try await startOnce()
                started = true
                return
            } catch {
                attempts -= 1
                guard attempts > 0 else { throw error }
                port = try freePort()
            }
        }
    }

    private func startOnce() async throws {
        let process = try Subprocess([
            Self.binary,
            "--bind", "127.0.0.1", "--port", String(port), "--dir", directory.path, "--daemonize", "yes",
            "--pidfile", pidFile, "--appendonly", appendOnly ? "yes" : "no", "--appendfsync", "always",
            "--save", "", "--logfile", directory.appendingPathComponent("redis.log").path,
        ])
        _ = try await process.finish(timeout: .seconds(60))
        // Ready means *our* server answers: its data folder is ours. A PING alone could be answered
        // by another process's server that took the port first (ours then failed to bind), and a
        // test would pause, kill or flush the wrong server.
        // And its pid file is written: Redis opens its port before it writes the file, and a
        // test that pauses or kills the server needs the pid.
        let ours = try await eventually(timeout: .seconds(45), interval: .milliseconds(100)) {
            self.command("CONFIG GET dir").contains(self.directory.path) && self.currentPid() != nil
        }
        guard ours else {
            throw TestEnvironment.ServiceUnavailable(variable: "redis-server :\(port)", reason: "did not start, or the port is another server's")
        }
    }

    /// Stops the server the way an operator would (it writes its AOF first) and waits until it is gone.
    public func stop() {
        let pid = currentPid()
        _ = command("SHUTDOWN")
        waitGone(pid)
    }

    /// Kills the server with SIGKILL, as a crash would.
    public func kill() {
        guard let pid = currentPid() else { return }
        Foundation.kill(pid, SIGKILL)
        waitGone(pid)
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered, until `resume`.
    public func pause() throws {
        guard let pid = currentPid() else { throw HarnessError("redis-server :\(port) has no live pid to pause") }
        Foundation.kill(pid, SIGSTOP)
    }

    public func resume() throws {
        guard let pid = currentPid() else { throw HarnessError("redis-server :\(port) has no live pid to resume") }
        Foundation.kill(pid, SIGCONT)
    }

    deinit {
        if let pid = currentPid() { Foundation.kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }

    private func currentPid() -> pid_t? {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
            Foundation.kill(pid, 0) == 0
        else { return nil }
        // A pid file left by a killed server may name a pid the system has since given to another
        // process (pid_max is 32768 here): signal only a redis-server.
        guard let name = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8), name.hasPrefix("redis-server") else { return nil }
        return pid
    }

    private func waitGone(_ pid: pid_t?) {
        guard let pid else { return }
        for _ in 0..<500 {
            if Foundation.kill(pid, 0) != 0 { return }
            usleep(10_000)
        }
    }

    /// Sends one inline command on a fresh socket and returns the first bytes of the answer.
    public func command(_ text: String) -> String {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return "" }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return "" }
        let bytes = Array((text + "\r\n").utf8)
        guard write(descriptor, bytes, bytes.count) == bytes.count else { return "" }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = read(descriptor, &buffer, buffer.count)
        return count > 0 ? String(decoding: buffer.prefix(count), as: UTF8.self) : ""
    }

    static var binary: String {
        for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        return "redis-server"
    }
}
