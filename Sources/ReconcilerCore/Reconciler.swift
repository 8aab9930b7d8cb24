public import Logging
import Metrics
public import PostgresClient
public import RedisClient
public import ReservationCore
import ReservationScripts
public import ServiceLifecycle
import Synchronization

/// Moves the gateway's events from the Redis streams into Postgres, and audits and repairs the
/// difference between the two.
public final class Reconciler: Sendable {
    let redis: RedisClient
    let postgres: PostgresClient
    public let consumer: StreamConsumer
    let configuration: ReconcilerConfiguration
    let logger: Logger
    /// How long an entry must sit unacknowledged with another consumer before `run` takes it.
    let claimIdleMilliseconds: Int
    private let applied = Counter(label: "reconciler_events_applied_total")
    private let batches = Counter(label: "reconciler_batches_total")
    /// When the last audit finished (Unix seconds): an operator alerts when it stops moving.
    let lastAudit = Gauge(label: "reconciler_last_audit_timestamp_seconds")
    private let trims = Counter(label: "reconciler_stream_trims_total")
    private let deadLetters = Counter(label: "reconciler_dead_letters_total")
    /// Repairs that threw: each is logged with its basket's id and retried with backoff.
    let repairFailures = Counter(label: "reconciler_repair_failures_total")
    let housekeepingDone = Mutex(Housekeeping())
    /// Per basket whose repair failed: how often, and when it may be tried again.
    let repairBackoff = Mutex([String: RepairBackoff]())
    /// Per basket: how many audits in a row could not take a view of one moment of it.
    let unsettled = Mutex([String: Int]())
    /// Per basket: the lease of a repair of ours that failed after writing to Redis (the basket
    /// stays out of service; the retry reuses the lease instead of waiting for it to run out).
    let keptLeases = Mutex([String: RepairLease]())

    struct RepairBackoff {
        var failures: Int
        var notBefore: ContinuousClock.Instant
    }

    /// How many trims, audits and repairs `run` has done: what its metrics count, readable in process.
    public struct Housekeeping: Sendable, Equatable {
        public var trims = 0
        public var audits = 0
        public var repairs = 0
        public var repairFailures = 0
        public var auditFailures = 0
    }

    public var housekeeping: Housekeeping { housekeepingDone.withLock { $0 } }

    public init(
        redis: RedisClient, postgres: PostgresClient, configuration: ReconcilerConfiguration, consumerName: String,
        claimIdleMilliseconds: Int = 30_000, logger: Logger
    ) {
        self.redis = redis
        self.postgres = postgres
        self.consumer = StreamConsumer(redis: redis, name: consumerName)
        self.configuration = configuration
        self.claimIdleMilliseconds = claimIdleMilliseconds
        self.logger = logger
    }

    var batchSize: Int { configuration.reconcilerBatchSize }

    /// Applies `entries` in one transaction, then acknowledges them: XACK only after COMMIT.
    @discardableResult
    func process(_ entries: [StreamEntry]) async throws -> Int {
        guard !entries.isEmpty else { return 0 }
        try await apply(entries)
        try await acknowledge(entries)
        return entries.count
    }

    /// The XACK of entries whose transaction committed, and the counts.
    private func acknowledge(_ entries: [StreamEntry]) async throws {
        try await consumer.acknowledge(entries)
        applied.increment(by: entries.count)
        batches.increment()
    }

    /// One transaction for `entries` (one by one when Postgres refuses the batch's data).
    private func apply(_ entries: [StreamEntry]) async throws {
        let withFields = entries.filter { !$0.fields.isEmpty }
        if !withFields.isEmpty {
            do {
                try await postgres.withConnection { connection in
                    try EventApplier.apply(withFields, on: connection)
                }
            } catch let error as PostgresError where error.isRefusedData {
                // One event Postgres refuses must not stop the rest: apply them one at a time
                // and set aside the ones that keep being refused. Transient errors (connection,
                // serialization) are thrown on, and the whole batch is retried later.
                logger.warning("batch refused by postgres; applying its events one by one", metadata: ["error": "\(error)"])
                try await applyOneByOne(withFields)
            }
        }
    }

    /// How often an event Postgres refuses is tried on its own before it is set aside.
    static let refusedEventAttempts = 3

    private func applyOneByOne(_ entries: [StreamEntry]) async throws {
        for entry in entries {
            var refusal: PostgresError?
            for _ in 0..<Self.refusedEventAttempts {
                do {
                    try await postgres.withConnection { try EventApplier.apply([entry], on: $0) }
                    refusal = nil
                    break
                } catch let error as PostgresError where error.isRefusedData {
                    refusal = error
                }
            }
            if let refusal { try await deadLetter(entry, refusal) }
        }
    }

    /// Writes a refused event to `dead_letters` (once per entry), counts and logs it; the caller
    /// then acknowledges it with the rest of its batch.
    private func deadLetter(_ entry: StreamEntry, _ error: PostgresError) async throws {
        let ordered = entry.fields.sorted { $0.key < $1.key }
        _ = try await postgres.execute(
            """
            INSERT INTO dead_letters (stream, entry_id, fields, sqlstate, error, attempts)
            VALUES ($1, $2, json_object($3::text[], $4::text[])::jsonb, $5, $6, $7)
            ON CONFLICT (stream, entry_id) DO NOTHING
            """,
            [
                .text(entry.stream), .text(entry.id), .textArray(ordered.map(\.key)), .textArray(ordered.map(\.value)),
                error.sqlState.map { .text($0) } ?? .null, .text(error.message), .int(Self.refusedEventAttempts),
            ])
        deadLetters.increment()
        logger.error(
            "event refused by postgres set aside in dead_letters",
            metadata: ["stream": "\(entry.stream)", "entry": "\(entry.id)", "sqlstate": "\(error.sqlState ?? "")"])
    }

    /// `reconciler once`: applies every event that exists now, including entries another
    /// (perhaps dead) reconciler left unacknowledged, and returns how many entries it applied.
    /// `limit`: stop once at least this many entries were applied (an audit judging one basket
    /// must not take over the catch-up of a reconciler far behind; it judges that basket later).
    public func drain(streams: [String]? = nil, limit: Int = .max) async throws -> Int {
        try await consumer.ensureGroups()
        var total = 0
        while total < limit {
            let claimed = try await consumer.claimIdle(minIdleMilliseconds: 0, count: batchSize, streams: streams)
            if claimed.isEmpty { break }
            total += try await process(claimed)
        }
        let ends = try await consumer.currentEnds()
        // Redis and Postgres work at once (the drain was a third idle, each waiting on the
        // other): the next batch is read, and the last one acknowledged, while this one is
        // applied. Batches are still applied in order, and each is acknowledged only after its
        // own COMMIT. A batch read ahead and not applied, or not acknowledged (an error below),
        // stays pending in the group, as after a crash, and is claimed and applied again.
        let consumer = consumer
        let batchSize = batchSize
        var next = Task { try await consumer.readNew(count: batchSize, streams: streams) }
        var acknowledging: Task<Void, any Error>?
        while true {
            let entries = try await next.value
            if entries.isEmpty { break }
            // Entries that arrived after we started are applied too, but we stop there.
            let pastEnd = entries.allSatisfy { entry in
                guard let end = ends[entry.stream].flatMap(StreamID.init), let id = StreamID(entry.id) else { return true }
                return id > end
            }
            // (A batch read ahead is always applied: read and left, it would wait for a claim.)
            let last = pastEnd || total + entries.count >= limit
            if !last { next = Task { try await consumer.readNew(count: batchSize, streams: streams) } }
            try await apply(entries)
            try await acknowledging?.value
            acknowledging = Task { try await self.acknowledge(entries) }
            total += entries.count
            if last { break }
        }
        try await acknowledging?.value
        return total
    }

    /// `reconciler once` after migrating: drain, rebuild the partitions without their marker (a
    /// fresh deployment, a flushed Redis), audit with repair, and drain the repairs' own events.
    /// Returns the events applied by the first drain, how long it took, and the baskets rebuilt
    /// or repaired.
    public func once() async throws -> (applied: Int, elapsed: Duration, repaired: Int) {
        let clock = ContinuousClock()
        let started = clock.now
        let applied = try await drain()
        let elapsed = clock.now - started
        let lost = try await rebuildUnmarkedPartitions()
        let drifts = try await audit(repair: true).filter(\.kind.needsRepair)
        if lost + drifts.count > 0 { _ = try await drain() }
        return (applied, elapsed, lost + drifts.count)
    }

    /// `reconciler run`: consume until graceful shutdown, auditing every `auditIntervalSeconds`.
    /// Redis or Postgres going away is logged and retried with backoff; nothing is acknowledged
    /// before it is committed, so nothing is lost while they are gone. Audits and rebuilds run
    /// in a task of their own: reading and applying new events never waits on one, and a repair
    /// that keeps failing stops nothing but itself.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.auditLoop() }
            // The consumer runs here and stops on shutdown only after its batch (committed and
            // acknowledged); the audit loop is then cancelled: it stops between two baskets (a
            // repair under way finishes its step; its lease runs out if it was cut short).
            await self.consumeLoop()
            group.cancelAll()
        }
        logger.info("reconciler stopped after its last batch")
    }

    private func consumeLoop() async {
        var ownPendingFirst = true
        var backoff = Duration.milliseconds(100)
        let clock = ContinuousClock()
        var nextClaim = clock.now
        var nextTrim = clock.now.advanced(by: .milliseconds(configuration.trimIntervalMilliseconds))
        var groupsReady = false
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                if !groupsReady {
                    try await consumer.ensureGroups()
                    groupsReady = true
                }
                var entries: [StreamEntry]
                if ownPendingFirst {
                    entries = try await consumer.readOwnPending(count: batchSize)
                    if entries.isEmpty { ownPendingFirst = false }
                } else {
                    entries = try await consumer.readNew(count: batchSize)
                }
                if clock.now >= nextClaim {
                    entries += try await consumer.claimIdle(minIdleMilliseconds: claimIdleMilliseconds, count: batchSize)
                    nextClaim = clock.now.advanced(by: .seconds(5))
                }
                if entries.isEmpty {
                    try? await Task.sleep(for: .milliseconds(20))
                } else {
                    try await process(entries)
                }
                // Trimming runs on its clock, however busy the streams are.
                if clock.now >= nextTrim {
                    try await consumer.trim()
                    trims.increment()
                    housekeepingDone.withLock { $0.trims += 1 }
                    nextTrim = clock.now.advanced(by: .milliseconds(configuration.trimIntervalMilliseconds))
                }
                backoff = .milliseconds(100)
            } catch {
                logger.warning("reconciler step failed; retrying", metadata: ["error": "\(error)", "backoff": "\(backoff)"])
                ownPendingFirst = true
                groupsReady = false
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    /// Every second the 16 partition markers are checked (a lost partition is rebuilt at once,
    /// not at the next audit); every `auditIntervalSeconds` an audit with repair runs. A failing
    /// audit is retried with backoff; it never holds up the consumer.
    private func auditLoop() async {
        let clock = ContinuousClock()
        var nextAudit = clock.now.advanced(by: .seconds(configuration.auditIntervalSeconds))
        var nextMarkers = clock.now
        var backoff = Duration.seconds(1)
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            do {
                if clock.now >= nextMarkers {
                    try await rebuildUnmarkedPartitions()
                    nextMarkers = clock.now.advanced(by: .seconds(1))
                }
                if clock.now >= nextAudit {
                    let drifts = try await audit(repair: true)
                    housekeepingDone.withLock { $0.audits += 1 }
                    if !drifts.isEmpty { logger.warning("audit found drift", metadata: ["count": "\(drifts.count)"]) }
                    nextAudit = clock.now.advanced(by: .seconds(configuration.auditIntervalSeconds))
                }
                backoff = .seconds(1)
                try? await Task.sleep(for: .milliseconds(100))
            } catch {
                housekeepingDone.withLock { $0.auditFailures += 1 }
                logger.warning("audit failed; retrying", metadata: ["error": "\(error)", "backoff": "\(backoff)"])
                try? await Task.sleep(for: backoff)
                nextAudit = clock.now.advanced(by: backoff)
                backoff = min(backoff * 2, .seconds(30))
            }
        }
    }

    func repaired(_ drift: Drift) {
        housekeepingDone.withLock { $0.repairs += 1 }
        Counter(label: "reconciler_repairs_total", dimensions: [("drift", drift.kind.rawValue)]).increment()
        logger.warning("basket repaired", metadata: ["basket": "\(drift.basketId)", "drift": "\(drift.kind)", "detail": "\(drift.detail)"])
    }
}

/// `reconciler run` as a Service: stops after its current batch on SIGTERM/SIGINT.
public struct ReconcilerService: Service {
    let reconciler: Reconciler

    public init(reconciler: Reconciler) { self.reconciler = reconciler }

    public func run() async throws {
        await reconciler.run()
    }
}
