public import Foundation
import RedisClient
import Synchronization

/// A Redis Cluster of a test's own: 3 primaries and 3 replicas on free loopback ports (cluster
/// bus ports chosen too), AOF on with `appendfsync always`, created with `redis-cli --cluster
/// create`. Tests move slots and fail primaries over through it. Every node is killed when the
/// object goes away.
public final class RedisClusterProcess: @unchecked Sendable {
    // @unchecked Sendable: only immutable state after init; the servers are shared through ports.
    public let ports: [Int]
    private let busPorts: [Int]
    public let directory: URL
    private let killed = Mutex<Set<Int>>([])

    public var url: String { ports.map { "redis://127.0.0.1:\($0)" }.joined(separator: ",") }

    public init() throws {
        var taken: Set<Int> = []
        func pick() throws -> Int {
            while true {
                let port = try freePort()
                if taken.insert(port).inserted { return port }
            }
        }
        ports = try (0..<6).map { _ in try pick() }
        busPorts = try (0..<6).map { _ in try pick() }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("redis-cluster-\(ports[0])-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    private func nodeDirectory(_ port: Int) -> URL { directory.appendingPathComponent("node-\(port)") }

    public func start() async throws {
        for (port, bus) in zip(ports, busPorts) {
            let folder = nodeDirectory(port)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let process = try Subprocess([
                RedisServerProcess.binary, "--bind", "127.0.0.1", "--port", String(port), "--cluster-enabled", "yes",
                "--cluster-port", String(bus), "--cluster-config-file", folder.appendingPathComponent("nodes.conf").path,
                "--cluster-node-timeout", "2000", "--dir", folder.path, "--daemonize", "yes",
                "--pidfile", folder.appendingPathComponent("redis.pid").path, "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--logfile", folder.appendingPathComponent("redis.log").path,
                // Replicas sync at once (not after the default 5 s wait for more replicas): a
                // replica that never synced cannot take over when its primary dies.
                "--repl-diskless-sync-delay", "0",
            ])
            _ = try await process.finish(timeout: .seconds(60))
        }
        for port in ports {
            guard try await eventually(timeout: .seconds(45), interval: .milliseconds(100), { try await self.cli(port, ["PING"]) == "PONG" }) else {
                throw HarnessError("cluster node :\(port) did not start")
            }
        }
        let create = try Subprocess(
            ["redis-cli", "--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", "1", "--cluster-yes"],
            captureOutput: true)
        let created = try await create.finish(timeout: .seconds(120))
        guard created.status == 0 else { throw HarnessError("redis-cli --cluster create failed: \(created.output.suffix(400))") }
        try await waitHealthy()
        // A replica that says `master_link_status:up` may not be streaming yet (after a diskless
        // sync its primary waits for its first acknowledgement): until then writes wait in the
        // primary's buffer, and a primary killed then takes them along. Tests start after that.
        for primary in try await primaries() {
            guard try await waitReplicated(primaryPort: primary.port) else {
                throw HarnessError("the replica of :\(primary.port) never acknowledged")
            }
        }
    }

    /// Until a replica of `primaryPort` holds everything the primary has written so far: a write
    /// (a key of a slot the primary serves) and `WAIT 1` on one connection of their own. `WAIT`
    /// counts acknowledgements of its own connection's writes, so a `WAIT` alone on a fresh
    /// connection returns at once, whatever the replica lacks. False if none acknowledged in time.
    public func waitReplicated(primaryPort: Int, timeoutMilliseconds: Int = 60_000) async throws -> Bool {
        guard let primary = try await primaries().first(where: { $0.port == primaryPort }) else {
            throw HarnessError(":\(primaryPort) is not a primary")
        }
        guard
            let key = (0..<100_000).lazy.map({ "replication-fence-{\($0)}" }).first(where: { key in
                let slot = RedisHashSlot.slot(of: key)
                return primary.slots.contains { $0.contains(slot) }
            })
        else { throw HarnessError("no key found for the slots of :\(primaryPort)") }
        let process = try Subprocess(
            [
                "/bin/sh", "-c", "printf 'INCR %s\\nWAIT 1 %s\\n' \"$0\" \"$1\" | redis-cli -p \"$2\"", key, String(timeoutMilliseconds),
                String(primaryPort),
            ],
            captureOutput: true)
        let result = try await process.finish(timeout: .seconds(Int64(timeoutMilliseconds / 1000 + 60)))
        let lines = result.output.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        guard result.status == 0, lines.count == 2, Int(lines[0]) != nil else { throw HarnessError("fence on :\(primaryPort): \(result.output)") }
        return lines[1] == "1"
    }

    /// Until every live node says `cluster_state:ok` and sees three primaries serving all slots.
    public func waitHealthy() async throws {
        let healthy = try await eventually(timeout: .seconds(120), interval: .milliseconds(100)) {
            for port in self.ports where !self.killed.withLock({ $0.contains(port) }) {
                let info = try await self.cli(port, ["CLUSTER", "INFO"])
                guard info.contains("cluster_state:ok"), info.contains("cluster_slots_ok:16384") else { return false }
                let replication = try await self.cli(port, ["INFO", "replication"])
                if replication.contains("role:slave"), !replication.contains("master_link_status:up") { return false }
            }
            return try await self.primaries().count == 3
        }
        guard healthy else { throw HarnessError("the test cluster did not become healthy") }
    }

    /// Runs one command on one node with redis-cli and returns its output, trimmed.
    @discardableResult
    public func cli(_ port: Int, _ arguments: [String]) async throws -> String {
        let process = try Subprocess(["redis-cli", "-p", String(port)] + arguments, captureOutput: true)
        let result = try await process.finish(timeout: .seconds(60))
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public struct Primary: Sendable {
        public let port: Int
        public let id: String
        public let slots: [ClosedRange<Int>]
    }

    /// The primaries as one node sees them (`CLUSTER NODES`).
    public func primaries() async throws -> [Primary] {
        let live = ports.first { !killed.withLock({ $0 }).contains($0) } ?? ports[0]
        let text = try await cli(live, ["CLUSTER", "NODES"])
        var result: [Primary] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 8, fields[2].contains("master"), !fields[2].contains("fail") else { continue }
            guard let address = fields[1].split(separator: "@").first, let port = address.split(separator: ":").last.flatMap({ Int($0) }) else {
                continue
            }
            var slots: [ClosedRange<Int>] = []
            for range in fields.dropFirst(8) where !range.hasPrefix("[") {
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                if bounds.count == 2 { slots.append(bounds[0]...bounds[1]) } else if bounds.count == 1 { slots.append(bounds[0]...bounds[0]) }
            }
            if !slots.isEmpty { result.append(Primary(port: port, id: String(fields[0]), slots: slots)) }
        }
        return result
    }

    public func owner(ofSlot slot: Int) async throws -> Primary? {
        try await primaries().first { primary in primary.slots.contains { $0.contains(slot) } }
    }

    /// Moves one slot to another primary the way `redis-cli --cluster reshard` does: IMPORTING
    /// and MIGRATING (clients get ASK meanwhile), MIGRATE of its keys in batches, then the slot
    /// assigned to the target everywhere (clients get MOVED). `pause` runs between batches, so a
    /// test can keep traffic flowing through the migration.
    public func migrate(
        slot: Int, pause: () async throws -> Void = {}, beforeAssign: () async throws -> Void = {}
    ) async throws -> (from: Int, to: Int) {
        let all = try await primaries()
        guard let source = all.first(where: { $0.slots.contains { $0.contains(slot) } }), let target = all.first(where: { $0.port != source.port })
        else { throw HarnessError("no owner for slot \(slot)") }
        try await cli(target.port, ["CLUSTER", "SETSLOT", String(slot), "IMPORTING", source.id])
        try await cli(source.port, ["CLUSTER", "SETSLOT", String(slot), "MIGRATING", target.id])
        while true {
            let keys = try await cli(source.port, ["CLUSTER", "GETKEYSINSLOT", String(slot), "20"])
                .split(separator: "\n").map(String.init).filter { !$0.isEmpty }
            if keys.isEmpty { break }
            let answer = try await cli(source.port, ["MIGRATE", "127.0.0.1", String(target.port), "", "0", "10000", "KEYS"] + keys)
            guard answer == "OK" || answer == "NOKEY" else { throw HarnessError("MIGRATE answered \(answer)") }
            try await pause()
        }
        // Every key is on the target now, the slot still MIGRATING: a client asking the source
        // for one of them gets ASK.
        try await beforeAssign()
        for port in [target.port, source.port] + ports.filter({ $0 != target.port && $0 != source.port }) {
            _ = try? await cli(port, ["CLUSTER", "SETSLOT", String(slot), "NODE", target.id])
        }
        return (source.port, target.port)
    }

    /// A replica of `primaryPort` that is in sync with it, as the replica itself reports: another
    /// node's `CLUSTER NODES` can still show a fresh replica as a primary without slots (gossip
    /// lags behind `cluster_state:ok`), so each node is asked about itself, until one answers.
    public func replica(of primaryPort: Int) async throws -> Int {
        let primaryId = try await cli(primaryPort, ["CLUSTER", "MYID"])
        let found = Mutex<Int?>(nil)
        let candidates = ports.filter { $0 != primaryPort && !killed.withLock({ $0 }).contains($0) }
        _ = try await eventually(timeout: .seconds(60), interval: .milliseconds(200)) {
            for port in candidates {
                let nodes = try await self.cli(port, ["CLUSTER", "NODES"])
                guard
                    let me = nodes.split(separator: "\n").map({ $0.split(separator: " ") }).first(where: {
                        $0.count > 3 && $0[2].contains("myself")
                    }), me[2].contains("slave"), me[3] == primaryId,
                    try await self.cli(port, ["INFO", "replication"]).contains("master_link_status:up")
                else { continue }
                found.withLock { $0 = port }
                return true
            }
            return false
        }
        guard let port = found.withLock({ $0 }) else { throw HarnessError("no replica of :\(primaryPort)") }
        return port
    }

    /// A coordinated failover: one replica of `primaryPort` takes over (no acknowledged write is
    /// lost). Returns the new primary's port once every node agrees.
    public func failover(primaryPort: Int) async throws -> Int {
        let port = try await replica(of: primaryPort)
        // A manual failover gives up (silently) when the replica cannot catch up with its primary
        // within 5 s, which a loaded machine can cause: ask again until it happens.
        var promoted = false
        for _ in 0..<8 where !promoted {
            let answer = try await cli(port, ["CLUSTER", "FAILOVER"])
            guard answer == "OK" else { throw HarnessError("CLUSTER FAILOVER answered \(answer)") }
            promoted = try await eventually(timeout: .seconds(15), interval: .milliseconds(100)) {
                try await self.primaries().contains { $0.port == port }
            }
        }
        guard promoted else { throw HarnessError("the failover of :\(primaryPort) did not complete") }
        try await waitHealthy()
        return port
    }

    /// SIGKILLs one node, as a crash would; its replica takes over after the node timeout.
    public func kill(port: Int) {
        killed.withLock { _ = $0.insert(port) }
        if let pid = pid(port) { Foundation.kill(pid, SIGKILL) }
    }

    private func pid(_ port: Int) -> pid_t? {
        let pidFile = nodeDirectory(port).appendingPathComponent("redis.pid").path
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
            let name = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8), name.hasPrefix("redis-server")
        else { return nil }
        return pid
    }

    public func stop() {
        for port in ports {
            if let pid = pid(port) { Foundation.kill(pid, SIGKILL) }
        }
    }

    deinit {
        stop()
        // KEEP_CLUSTER=1 keeps the nodes' logs and files for a post-mortem.
        if ProcessInfo.processInfo.environment["KEEP_CLUSTER"] == nil { try? FileManager.default.removeItem(at: directory) }
    }
}
