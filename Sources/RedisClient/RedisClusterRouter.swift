import NIOCore
import Synchronization

/// The cluster half of `RedisClient`: routes each command by the slot of its key
/// (`ClusterRouting`) to the primary that serves it (`ClusterSlotMap`), over that node's own
/// pipelined connections (one per event loop, as with a single server), and follows the
/// cluster's answers (`ClusterRedirect`):
///
/// - `MOVED`: the map is patched for that slot, a full refresh is started, and the command goes
///   to the named node. `ASK`: the command goes once to the named node after `ASKING`; the map
///   stays. Both are capped at `maxRedirects`, so nothing loops.
/// - `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, `READONLY`, or a node that cannot be
///   reached: a refresh, a short backoff, and another try, at most `maxRetries` times; then the
///   error goes to the caller (the gateway answers 503).
///
/// Why a retry never applies a command twice: every reply above is sent by Redis *instead of*
/// running the command (a redirect or a refusal happens before execution, and a script either
/// runs whole or not at all), and a connect failure means nothing was sent. A connection that
/// drops with a command in flight (`connectionClosed`) is never retried: whether it ran is
/// unknown, and the caller decides (the gateway's clients retry with their Idempotency-Key).
/// `NOSCRIPT` (a promoted replica with an empty script cache) is handled by each connection
/// itself, which loads the script and sends the call again.
final class RedisClusterRouter: Sendable {
    static let maxRedirects = 5
    static let maxRetries = 5

    private struct State {
        var map = ClusterSlotMap()
        var nodes: [RedisNode: RedisNodeConnections] = [:]
        var refreshedAt: ContinuousClock.Instant?
        var refreshing = false
    }

    let configuration: RedisConfiguration
    let eventLoopGroup: any EventLoopGroup
    private let state = Mutex(State())
    private let followed = Mutex(RedisClient.ClusterRedirects())

    var redirects: RedisClient.ClusterRedirects { followed.withLock { $0 } }

    /// The counts of every node's connections (nodes that left the cluster included).
    var totals: RedisConnectionCounters.Totals {
        let nodes = state.withLock { Array($0.nodes.values) }
        var totals = RedisConnectionCounters.Totals()
        for node in nodes { totals.add(node.totals) }
        return totals
    }

    init(configuration: RedisConfiguration, eventLoopGroup: any EventLoopGroup) {
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
    }

    // MARK: routing

    private func connections(_ node: RedisNode) -> RedisNodeConnections {
        state.withLock { state in
            if let existing = state.nodes[node] { return existing }
            var nodeConfiguration = configuration
            nodeConfiguration.host = node.host
            nodeConfiguration.port = node.port
            nodeConfiguration.clusterSeeds = []
            let created = RedisNodeConnections(configuration: nodeConfiguration, eventLoopGroup: eventLoopGroup)
            state.nodes[node] = created
            return created
        }
    }

    /// The node for `command`: the slot's primary, or for a keyless command (or a slot the map
    /// does not know yet) any primary, else a seed (which answers MOVED if it is the wrong one).
    private func node(for command: [RedisArgument]) -> RedisNode {
        let slot = ClusterRouting.slot(of: command)
        let (node, stale) = state.withLock { state -> (RedisNode, Bool) in
            let stale = state.refreshedAt.map { ContinuousClock.now - $0 > configuration.clusterRefreshInterval } ?? true
            if let slot, let owner = state.map.node(forSlot: slot) { return (owner, stale) }
            if slot == nil, let any = state.map.primaries.min(by: { $0.description < $1.description }) { return (any, stale) }
            return (configuration.clusterSeeds[(slot ?? 0) % configuration.clusterSeeds.count], true)
        }
        if stale { refreshSoon() }
        return node
    }

    /// `replication` goes with the command to whichever node's connection it is written to:
    /// the `WAIT` that covers it is the one after that connection's batch. A redirect or a
    /// refusal is an error reply, handed over at once (never as replicated), and the command
    /// written again elsewhere is covered by that connection's own `WAIT`.
    func send(
        _ command: [RedisArgument], script: String?, replication: RedisReplication = .none, on eventLoop: (any EventLoop)?
    ) -> EventLoopFuture<RedisValue> {
        attempt(command, script: script, replication: replication, on: eventLoop, number: 0, askingAt: nil)
    }

    private func attempt(
        _ command: [RedisArgument], script: String?, replication: RedisReplication, on eventLoop: (any EventLoop)?, number: Int,
        askingAt: RedisNode?
    ) -> EventLoopFuture<RedisValue> {
        let target = askingAt ?? node(for: command)
        let connection = connections(target).connection(for: eventLoop)
        let reply: EventLoopFuture<RedisValue>
        if askingAt != nil {
            // After ASKING the importing node takes exactly the next command; a script goes as
            // EVAL with its source, since that node's cache may not have it.
            var asked = command
            if let script, asked.count > 1, ClusterRouting.text(asked[0]).uppercased() == "EVALSHA" {
                asked[0] = "EVAL"
                asked[1] = .string(script)
            }
            reply = connection.send(batch: [["ASKING"], asked], replication: replication).flatMapThrowing { results in
                guard results.count == 2 else { throw RedisError.protocolError("ASKING batch answered \(results.count) replies") }
                return try results[1].get()
            }
        } else {
            reply = connection.send(command, script: script, replication: replication)
        }
        let loop = eventLoop ?? reply.eventLoop
        return reply.flatMapError { error in
            switch ClusterRedirect(error) {
            case .moved(let slot, let node) where number < Self.maxRedirects:
                self.followed.withLock { $0.moved += 1 }
                self.state.withLock { $0.map.assign(slot: slot, to: node) }
                self.refreshSoon()
                return self.attempt(command, script: script, replication: replication, on: eventLoop, number: number + 1, askingAt: nil)
            case .ask(_, let node) where number < Self.maxRedirects:
                self.followed.withLock { $0.asked += 1 }
                return self.attempt(command, script: script, replication: replication, on: eventLoop, number: number + 1, askingAt: node)
            case .retryLater where number < Self.maxRetries:
                return self.retry(command, script: script, replication: replication, on: eventLoop, loop: loop, number: number)
            case .none:
                if case RedisError.connectFailed = error, number < Self.maxRetries {
                    // Nothing was sent: the node is gone or failing over; ask for the new map.
                    return self.retry(command, script: script, replication: replication, on: eventLoop, loop: loop, number: number)
                }
                return loop.makeFailedFuture(error)
            default:
                // Out of redirections or retries (a slot in the middle of a move, a cluster
                // electing a primary): the command did not run, and this is "not now", never a
                // wrong request, so the caller gets a transient error (the gateway's 503).
                return loop.makeFailedFuture(RedisError.overloaded)
            }
        }
    }

    private func retry(
        _ command: [RedisArgument], script: String?, replication: RedisReplication, on eventLoop: (any EventLoop)?, loop: any EventLoop,
        number: Int
    ) -> EventLoopFuture<RedisValue> {
        followed.withLock { $0.retried += 1 }
        refreshSoon(force: true)
        // 25, 50, 100, 200, 400 ms: at most about 0.8 s in all before the caller hears.
        let delay = TimeAmount.milliseconds(25 << min(number, 4))
        return loop.scheduleTask(in: delay) {}.futureResult.flatMap {
            self.attempt(command, script: script, replication: replication, on: eventLoop, number: number + 1, askingAt: nil)
        }
    }

    func pipeline(_ commands: [[RedisArgument]], replication: RedisReplication = .none) async throws -> [Result<RedisValue, any Error>] {
        let replies = commands.map { send($0, script: nil, replication: replication, on: nil) }
        var results: [Result<RedisValue, any Error>] = []
        results.reserveCapacity(replies.count)
        for reply in replies {
            do {
                results.append(.success(try await reply.get()))
            } catch {
                results.append(.failure(error))
            }
        }
        return results
    }

    // MARK: the slot map

    /// Starts a refresh in the background unless one runs (or, without `force`, one finished
    /// within the last 100 ms).
    private func refreshSoon(force: Bool = false) {
        let start = state.withLock { state -> Bool in
            if state.refreshing { return false }
            if !force, let at = state.refreshedAt, ContinuousClock.now - at < .milliseconds(100) { return false }
            state.refreshing = true
            return true
        }
        guard start else { return }
        Task {
            _ = try? await self.refresh()
            self.state.withLock { $0.refreshing = false }
        }
    }

    /// Asks the known primaries, then the seeds, for `CLUSTER SLOTS`, and takes the first
    /// complete answer.
    @discardableResult
    func refresh() async throws -> ClusterSlotMap {
        let candidates = state.withLock { Array($0.map.primaries) } + configuration.clusterSeeds
        var lastError: any Error = RedisError.protocolError("no cluster node to ask for the slot map")
        for node in candidates {
            do {
                let reply = try await connections(node).connection(for: nil).send(["CLUSTER", "SLOTS"]).get()
                let map = try ClusterSlotMap(clusterSlots: reply, askedAt: node)
                guard !map.isEmpty else { continue }
                state.withLock { state in
                    state.map = map
                    state.refreshedAt = .now
                }
                return map
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    /// Loads the scripts on every primary.
    func load(_ scripts: [RedisScript]) async throws {
        let map = try await refresh()
        for node in map.primaries {
            for script in scripts {
                let sha = try await connections(node).connection(for: nil).send(["SCRIPT", "LOAD", .string(script.source)]).get()
                guard sha.string == script.sha1 else {
                    throw RedisError.protocolError("SCRIPT LOAD of \(script.name) answered another SHA on \(node)")
                }
            }
        }
    }

    func close() async {
        let nodes = state.withLock { Array($0.nodes.values) }
        for node in nodes { await node.close() }
    }
}
