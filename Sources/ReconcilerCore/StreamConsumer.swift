public import RedisClient
import ReservationCore

/// Reads the partition streams through the `reconciler` consumer group. Reads never block (the
/// Redis client pipelines many callers over one connection; a blocking read would stall them),
/// so an idle reconciler polls.
public struct StreamConsumer: Sendable {
    public static let group = "reconciler"

    let redis: RedisClient
    public let name: String
    let streams: [String]

    public init(redis: RedisClient, name: String) {
        self.redis = redis
        self.name = name
        self.streams = (0..<Keyspace.partitionCount).map(Keyspace.stream)
    }

    /// Creates the group on every stream (and the stream itself) if missing. After Redis lost
    /// its data, this is what brings consumption back.
    public func ensureGroups() async throws {
        for stream in streams {
            do {
                _ = try await redis.send("XGROUP", "CREATE", .string(stream), .string(Self.group), "0", "MKSTREAM")
            } catch let error as RedisError where error.serverCode == "BUSYGROUP" {
                continue
            }
        }
    }

    /// New entries (never delivered to anyone), up to `count` per stream.
    public func readNew(count: Int, streams subset: [String]? = nil) async throws -> [StreamEntry] {
        try await read(count: count, from: subset ?? streams, after: ">")
    }

    /// Entries delivered to this consumer and not yet acknowledged (after a failed apply).
    public func readOwnPending(count: Int) async throws -> [StreamEntry] {
        try await read(count: count, from: streams, after: "0")
    }

    /// One XREADGROUP over all `keys` on a single server; on a cluster, where the streams live
    /// in different slots (one command may not span them), one per stream, pipelined, each
    /// routed to the node that owns its stream.
    private func read(count: Int, from keys: [String], after position: String) async throws -> [StreamEntry] {
        func command(_ keys: [String]) -> [RedisArgument] {
            ["XREADGROUP", "GROUP", .string(Self.group), .string(name), "COUNT", .int(count), "STREAMS"]
                + keys.map { .string($0) } + keys.map { _ in .string(position) }
        }
        guard redis.isCluster else {
            return try await withGroups { StreamEntry.parseRead(try await redis.send(command(keys))) }
        }
        return try await withGroups {
            var entries: [StreamEntry] = []
            for reply in try await redis.pipeline(keys.map { command([$0]) }) {
                entries += StreamEntry.parseRead(try reply.get())
            }
            return entries
        }
    }

    /// Takes over entries left pending by any consumer for at least `minIdleMilliseconds`.
    public func claimIdle(minIdleMilliseconds: Int, count: Int, streams subset: [String]? = nil) async throws -> [StreamEntry] {
        var claimed: [StreamEntry] = []
        for stream in subset ?? streams {
            var cursor = "0-0"
            repeat {
                let reply = try await withGroups {
                    try await redis.send(
                        "XAUTOCLAIM", .string(stream), .string(Self.group), .string(name),
                        .int(minIdleMilliseconds), .string(cursor), "COUNT", .int(count))
                }
                guard let parts = reply.array, parts.count >= 2, let next = parts[0].string else { break }
                claimed += StreamEntry.parseEntries(stream, parts[1])
                cursor = next
            } while cursor != "0-0" && claimed.count < count
        }
        return claimed
    }

    public func acknowledge(_ entries: [StreamEntry]) async throws {
        var byStream: [String: [RedisArgument]] = [:]
        for entry in entries { byStream[entry.stream, default: []].append(.string(entry.id)) }
        for (stream, ids) in byStream {
            _ = try await redis.send(["XACK", .string(stream), .string(Self.group)] + ids)
        }
    }

    /// Removes entries every consumer has acknowledged: everything older than the oldest pending
    /// entry, or than the group's last delivered entry when nothing is pending. An entry nobody
    /// has acknowledged is never trimmed.
    public func trim() async throws {
        for stream in streams {
            let groups = try await redis.send("XINFO", "GROUPS", .string(stream))
            var lastDelivered: String?
            for group in groups.array ?? [] {
                let fields = group.array ?? []
                var index = 0
                var groupName: String?
                var delivered: String?
                while index + 1 < fields.count {
                    switch fields[index].string {
                    case "name": groupName = fields[index + 1].string
                    case "last-delivered-id": delivered = fields[index + 1].string
                    default: break
                    }
                    index += 2
                }
                if groupName == Self.group { lastDelivered = delivered }
            }
            guard var minimum = lastDelivered.flatMap(StreamID.init), minimum.milliseconds > 0 || minimum.sequence > 0 else { continue }
            let pending = try await redis.send("XPENDING", .string(stream), .string(Self.group))
            if let summary = pending.array, summary.count >= 2, let oldest = summary[1].string.flatMap(StreamID.init) {
                minimum = min(minimum, oldest)
            }
            _ = try await redis.send("XTRIM", .string(stream), "MINID", .string(minimum.description))
        }
    }

    /// The partitions whose stream holds entries the group has not acknowledged (delivered and
    /// pending, or not delivered yet): there, Postgres may simply not have caught up.
    public func partitionsWithBacklog() async throws -> Set<Int> {
        var result: Set<Int> = []
        for (partition, stream) in streams.enumerated() where try await hasBacklog(stream) { result.insert(partition) }
        return result
    }

    /// Whether `stream` holds entries the group has not acknowledged: pending ones, or entries
    /// past its last delivered id. Entries trimmed before delivery are not waiting (they are
    /// lost): only an entry that still exists counts.
    public func hasBacklog(_ stream: String) async throws -> Bool {
        do {
            _ = try await redis.send("XINFO", "STREAM", .string(stream))
        } catch let error as RedisError where error.serverCode == "ERR" {
            return false  // no such stream: nothing waits there
        }
        let groups = (try? await redis.send("XINFO", "GROUPS", .string(stream)).array) ?? []
        let group = groups.first { Self.field("name", in: $0)?.string == Self.group }
        if let group, (Self.field("pending", in: group)?.int ?? 0) > 0 { return true }
        let delivered = group.flatMap { Self.field("last-delivered-id", in: $0)?.string.flatMap(StreamID.init) }
        let after = delivered.map { "(" + $0.description } ?? "-"
        let next = try await redis.send("XRANGE", .string(stream), .string(after), "+", "COUNT", 1)
        return !(next.array ?? []).isEmpty
    }

    /// A field of a flat name/value array reply (XINFO's shape).
    static func field(_ name: String, in reply: RedisValue) -> RedisValue? {
        let values = reply.array ?? []
        var index = 0
        while index + 1 < values.count {
            if values[index].string == name { return values[index + 1] }
            index += 2
        }
        return nil
    }

    /// The newest entry id of every stream now: `once` drains up to these.
    public func currentEnds() async throws -> [String: String] {
        var ends: [String: String] = [:]
        for stream in streams {
            let reply = try await redis.send("XREVRANGE", .string(stream), "+", "-", "COUNT", 1)
            if let last = reply.array?.first?.array?.first?.string { ends[stream] = last }
        }
        return ends
    }

    /// A stream or group that vanished (Redis flushed) is recreated, and the read retried once.
    private func withGroups<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as RedisError where error.serverCode == "NOGROUP" {
            try await ensureGroups()
            return try await body()
        }
    }
}
