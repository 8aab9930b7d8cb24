import Foundation
import PostgresClient

/// A PostgreSQL 15 server of a test's own (own port, own data folder), for tests that stop it.
/// As root it runs as the `postgres` user, since the server refuses to run as root.
public final class PostgresServerProcess: @unchecked Sendable {
    // @unchecked Sendable: immutable after init; the server is shared only through its port.
    public let port: Int
    public let directory: String
    static let bin = "/usr/lib/postgresql/15/bin"

    public var url: String { "postgres://postgres@127.0.0.1:\(port)/postgres" }

    public init() throws {
        port = try freePort()
        directory = "/tmp/pg-test-\(port)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if getuid() == 0 { try Self.shell(["chown", "postgres:postgres", directory]) }
        try asOwner(["\(Self.bin)/initdb", "-D", directory, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
    }

    public func start() throws {
        do {
            try asOwner([
                "\(Self.bin)/pg_ctl", "-D", directory, "-l", "\(directory)/server.log", "-w", "-t", "300",
                "-o", "-p \(port) -c listen_addresses=127.0.0.1 -k \(directory) -c fsync=off", "start",
            ])
        } catch {
            // The server's own words, before the folder goes away with this object.
            let log = (try? String(contentsOfFile: "\(directory)/server.log", encoding: .utf8)) ?? ""
            try? log.write(toFile: "/tmp/pg-start-failure-\(port).log", atomically: true, encoding: .utf8)
            throw HarnessError("\(error); server.log (kept in /tmp/pg-start-failure-\(port).log) ends: \(log.suffix(600))")
        }
    }

    public func stop() throws {
        try asOwner(["\(Self.bin)/pg_ctl", "-D", directory, "-m", "fast", "-w", "stop"])
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the server and all its backends: a server that
    /// accepts TCP but never answers, like a frozen VM.
    public func freeze(_ frozen: Bool) throws {
        let pidFile = try String(contentsOfFile: "\(directory)/postmaster.pid", encoding: .utf8)
        guard let pid = pidFile.split(separator: "\n").first.flatMap({ pid_t($0) }) else { throw HarnessError("no postmaster pid") }
        let signal = frozen ? SIGSTOP : SIGCONT
        var processes: [pid_t] = [pid]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let child = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            // Fields after the command name: state, then the parent's pid.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, pid_t(fields[1]) == pid { processes.append(child) }
        }
        for process in processes { kill(process, signal) }
    }

    deinit {
        try? freeze(false)
        try? asOwner(["\(Self.bin)/pg_ctl", "-D", directory, "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func asOwner(_ arguments: [String]) throws {
        try Self.shell(getuid() == 0 ? ["runuser", "-u", "postgres", "--"] + arguments : arguments)
    }

    static func shell(_ arguments: [String]) throws {
        let status = try Subprocess(arguments).finishBlocking()
        guard status == 0 else {
            throw HarnessError("\(arguments.joined(separator: " ")) exited \(status)")
        }
    }
}

/// A database of a test's own on the shared test server (dropped at the end).
public final class TestDatabase: Sendable {
    public let url: String
    public let name: String
    private let adminURL: String

    public static func create() async throws -> TestDatabase {
        let base = try TestEnvironment.databaseURL()
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
        let admin = PostgresClient(url: base, size: 1)
        try await admin.execute("CREATE DATABASE \(name)")
        await admin.shutdown()
        return TestDatabase(url: Self.replacingDatabase(in: base, with: String(name)), name: String(name), adminURL: base)
    }

    private init(url: String, name: String, adminURL: String) {
        self.url = url
        self.name = name
        self.adminURL = adminURL
    }

    public func drop() async {
        let admin = PostgresClient(url: adminURL, size: 1)
        _ = try? await admin.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        await admin.shutdown()
    }

    static func replacingDatabase(in url: String, with name: String) -> String {
        var base = url
        var query = ""
        if let mark = base.firstIndex(of: "?") {
            query = String(base[mark...])
            base = String(base[..<mark])
        }
        guard let slash = base.range(of: "/", options: .backwards), base[..<slash.lowerBound].contains("@") || base.hasPrefix("postgres") else {
            return base + "/" + name + query
        }
        return base[..<slash.lowerBound] + "/" + name + query
    }
}

/// Runs a binary of this package (built next to the test bundle), e.g. `reconciler`.
public enum ProductProcess {
    public static func binary(_ name: String) -> String {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        // The test bundle may be reported as a path inside the .xctest folder.
        while !FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent(name).path), directory.path != "/" {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent(name).path
    }

    public static func start(_ name: String, _ arguments: [String], environment: [String: String]) throws -> Subprocess {
        try Subprocess([binary(name)] + arguments, environment: environment, captureOutput: true)
    }

    /// Runs to completion.
    public static func run(_ name: String, _ arguments: [String], environment: [String: String]) async throws -> (status: Int32, output: String) {
        try await start(name, arguments, environment: environment).finish()
    }
}
