import Crypto
public import NIOCore
import NIOPosix
import Synchronization

/// A Redis script called by SHA. The SHA is computed from the source, so it can never disagree
/// with what `SCRIPT LOAD` would answer.
public struct RedisScript: Sendable, Hashable {
    public let name: String
    public let source: String
    public let sha1: String

    public init(name: String, source: String) {
        self.name = name
        self.source = source
        self.sha1 = Insecure.SHA1.hash(data: Array(source.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}

/// One connection's counts: written only on its event loop (so no cache line is shared between
/// loops), atomic so the metrics page can read them from anywhere.
final class RedisConnectionCounters: Sendable {
    let scriptLoads = Atomic<Int>(0)
    let batches = Atomic<Int>(0)
    let commands = Atomic<Int>(0)
    /// `WAIT`s answered, those that counted too few replicas, and replies held for one.
    let waits = Atomic<Int>(0)
    let waitTimeouts = Atomic<Int>(0)
    let heldReplies = Atomic<Int>(0)

    struct Totals {
        var scriptLoads = 0, batches = 0, commands = 0, waits = 0, waitTimeouts = 0, heldReplies = 0

        mutating func add(_ counters: RedisConnectionCounters) {
            scriptLoads &+= counters.scriptLoads.load(ordering: .relaxed)
            batches &+= counters.batches.load(ordering: .relaxed)
            commands &+= counters.commands.load(ordering: .relaxed)
            waits &+= counters.waits.load(ordering: .relaxed)
            waitTimeouts &+= counters.waitTimeouts.load(ordering: .relaxed)
            heldReplies &+= counters.heldReplies.load(ordering: .relaxed)
        }

        mutating func add(_ other: Totals) {
            scriptLoads &+= other.scriptLoads
            batches &+= other.batches
            commands &+= other.commands
            waits &+= other.waits
            waitTimeouts &+= other.waitTimeouts
            heldReplies &+= other.heldReplies
        }
    }
}

/// One server's connections: one pipelined connection per event loop of the group (times
/// `connectionsPerEventLoop`). A caller already on one of those loops uses that loop's connection
/// with no thread hop; other callers are spread round robin.
final class RedisNodeConnections: Sendable {
    let connections: [RedisConnection]
    private let nextConnection = Atomic<Int>(0)

    init(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup) {
        var connections: [RedisConnection] = []
        for eventLoop in eventLoopGroup.makeIterator() {
            for _ in 0..<max(1, configuration.connectionsPerEventLoop) {
                connections.append(RedisConnection(eventLoop: eventLoop, configuration: configuration))
            }
        }
        self.connections = connections
    }

    var totals: RedisConnectionCounters.Totals {
        var totals = RedisConnectionCounters.Totals()
        for connection in connections { totals.add(connection.counters) }
        return totals
    }

    func connection(for eventLoop: (any EventLoop)?) -> RedisConnection {
        if let eventLoop {
            for connection in connections where connection.eventLoop === eventLoop { return connection }
        }
        let index = nextConnection.wrappingAdd(1, ordering: .relaxed).oldValue
        return connections[index % connections.count]
    }

    func close() async {
        for connection in connections {
            try? await connection.close().get()
        }
    }
}

/// The Redis client everything in the product uses: a fixed set of pipelined connections, one per
/// event loop of the group it is given. With one server (`REDIS_URL` a single URL) that is all;
/// with cluster seeds, it routes every command by the slot of its key to the primary serving
/// it, over that node's own connections (see `RedisClusterRouter`).
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    public let eventLoopGroup: any EventLoopGroup
    private let standalone: RedisNodeConnections?
    private let cluster: RedisClusterRouter?

    public init(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        if configuration.isCluster {
            standalone = nil
            cluster = RedisClusterRouter(configuration: configuration, eventLoopGroup: eventLoopGroup)
        } else {
            standalone = RedisNodeConnections(configuration: configuration, eventLoopGroup: eventLoopGroup)
            cluster = nil
        }
    }

    /// Whether this client talks to a Redis Cluster.
    public var isCluster: Bool { cluster != nil }

    /// How often a cluster client followed each kind of answer (all zero for a single server).
    public struct ClusterRedirects: Sendable, Equatable {
        public var moved = 0
        public var asked = 0
        /// TRYAGAIN, CLUSTERDOWN, LOADING, MASTERDOWN, READONLY or an unreachable node.
        public var retried = 0
    }

    public var clusterRedirects: ClusterRedirects { cluster?.redirects ?? ClusterRedirects() }

    /// How many times a script had to be loaded after a `NOSCRIPT` reply.
    public var scriptLoadCount: Int { totals.scriptLoads }

    /// Batches written to Redis and commands sent in them, over all connections: their ratio is
    /// the pipelining depth (each batch is one write, and with `appendfsync always` one fsync).
    public var batchesWritten: Int { totals.batches }
    public var commandsSent: Int { totals.commands }

    /// With `waitReplicas` ≥ 1: `WAIT`s answered, those that counted fewer replicas than asked
    /// (their batch's state changes failed with `notReplicated`), and replies held for a `WAIT`.
    public var replicationWaits: (waits: Int, timeouts: Int, heldReplies: Int) {
        let totals = totals
        return (totals.waits, totals.waitTimeouts, totals.heldReplies)
    }

    private var totals: RedisConnectionCounters.Totals {
        if let cluster { return cluster.totals }
        return standalone!.totals
    }

    /// Sends one command. Error replies fail the future with `RedisError.server`.
    /// With `eventLoop` given (the caller's own loop), the future completes on it without a hop.
    /// `replication`: whether it may change state (a write that must be replicated before its
    /// reply is trusted, with `waitReplicas` ≥ 1); plain commands are taken as reads.
    public func send(
        _ arguments: [RedisArgument], on eventLoop: (any EventLoop)? = nil, replication: RedisReplication = .none
    ) -> EventLoopFuture<RedisValue> {
        if let cluster { return cluster.send(arguments, script: nil, replication: replication, on: eventLoop) }
        return standalone!.connection(for: eventLoop).send(arguments, replication: replication)
    }

    public func send(_ arguments: [RedisArgument], replication: RedisReplication = .none) async throws -> RedisValue {
        try await send(arguments, on: nil, replication: replication).get()
    }

    public func send(_ arguments: RedisArgument...) async throws -> RedisValue {
        try await send(arguments)
    }

    /// Sends several commands in one batch on one connection; each gets its own result. On a
    /// cluster each command goes to its own node (commands for one node still share batches).
    public func pipeline(
        _ commands: [[RedisArgument]], replication: RedisReplication = .none
    ) async throws -> [Result<RedisValue, any Error>] {
        if let cluster { return try await cluster.pipeline(commands, replication: replication) }
        return try await standalone!.connection(for: nil).send(batch: commands, replication: replication).get()
    }

    /// Runs `script` by SHA. On `NOSCRIPT` (the script did not run) the connection loads the
    /// script and sends the call once more (see `RedisConnectionStateMachine`). A script is
    /// taken to change state unless `replication` says otherwise.
    public func evalSHA(
        _ script: RedisScript, keys: [String], arguments: [RedisArgument], on eventLoop: (any EventLoop)? = nil,
        replication: RedisReplication = .always
    ) -> EventLoopFuture<RedisValue> {
        let command = Self.evalSHACommand(script, keys: keys, arguments: arguments)
        if let cluster { return cluster.send(command, script: script.source, replication: replication, on: eventLoop) }
        return standalone!.connection(for: eventLoop).send(command, script: script.source, replication: replication)
    }

    /// The same, with the reply handed to `completion` on `eventLoop` (no future: the hot path).
    /// On a single server the reply comes straight from the connection of `eventLoop`; on a
    /// cluster (routing, redirects and retries are future-based) it is the future's result.
    public func evalSHA(
        _ script: RedisScript, keys: [String], arguments: [RedisArgument], on eventLoop: any EventLoop,
        replication: RedisReplication = .always, completion: @escaping @Sendable (Result<RedisValue, any Error>) -> Void
    ) {
        guard let standalone else {
            evalSHA(script, keys: keys, arguments: arguments, on: eventLoop, replication: replication).hop(to: eventLoop)
                .whenComplete(completion)
            return
        }
        let command = Self.evalSHACommand(script, keys: keys, arguments: arguments)
        let connection = standalone.connection(for: eventLoop)
        if connection.eventLoop === eventLoop {
            connection.send(command, script: script.source, replication: replication, completion: completion)
        } else {
            connection.send(command, script: script.source, replication: replication) { result in
                eventLoop.execute { completion(result) }
            }
        }
    }

    /// Runs `work` on `eventLoop` (where the caller is) right before the next batch of that
    /// loop's connection is formed (later in this turn, or after `REDIS_BATCH_DELAY_US`): the
    /// calls `work` sends join that batch (the reserve coalescer gathers a basket's reservations
    /// until then). On a cluster, whose calls are routed by key: later in this turn.
    public func beforeNextBatch(on eventLoop: any EventLoop, _ work: @escaping @Sendable () -> Void) {
        if let standalone, eventLoop.inEventLoop {
            let connection = standalone.connection(for: eventLoop)
            if connection.eventLoop === eventLoop {
                connection.stage(work)
                return
            }
        }
        eventLoop.execute(work)
    }

    private static func evalSHACommand(_ script: RedisScript, keys: [String], arguments: [RedisArgument]) -> [RedisArgument] {
        var command: [RedisArgument] = ["EVALSHA", .string(script.sha1), .int(keys.count)]
        command.reserveCapacity(3 + keys.count + arguments.count)
        for key in keys { command.append(.string(key)) }
        command.append(contentsOf: arguments)
        return command
    }

    public func evalSHA(
        _ script: RedisScript, keys: [String], arguments: [RedisArgument], replication: RedisReplication = .always
    ) async throws -> RedisValue {
        try await evalSHA(script, keys: keys, arguments: arguments, on: nil, replication: replication).get()
    }

    /// Loads scripts up front (start-up), so the first requests need no NOSCRIPT round trip. On
    /// a cluster, on every primary (a replica promoted later loads them on its first NOSCRIPT).
    public func load(_ scripts: [RedisScript]) async throws {
        if let cluster {
            try await cluster.load(scripts)
            return
        }
        for script in scripts {
            let sha = try await send(["SCRIPT", "LOAD", .string(script.source)])
            guard sha.string == script.sha1 else {
                throw RedisError.protocolError("SCRIPT LOAD of \(script.name) answered another SHA")
            }
        }
    }

    /// Closes every connection; calls after this fail with `RedisError.shutdown`.
    public func shutdown() async {
        await standalone?.close()
        await cluster?.close()
    }
}
