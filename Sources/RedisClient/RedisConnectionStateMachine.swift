import NIOCore

/// The protocol state of one pipelined Redis connection, as a plain value: events go in (a
/// command queued, the socket connected, a reply read, the batch timer fired, an error, the socket
/// closed, shutdown) and actions come out (connect, write this batch, complete or fail these
/// waiters, close). No socket, no event loop: `RedisConnection` drives it on its loop, and the
/// unit tests drive it with plain values (`Waiter` is a promise there, anything in a test).
///
/// Pipelining: commands queue in `outbox` while a batch is on the wire, and leave together, in
/// one write, once that batch's last reply is in. Replies come back in order, so each completes
/// the oldest entry in flight.
///
/// Replicated acknowledgements (`wait` set, `REDIS_WAIT_REPLICAS` ≥ 1): a batch that holds a
/// command that may change state (`RedisReplication`) is followed by `WAIT n timeout` in the same
/// write. The replies of its state changes are held (`held`) until that `WAIT` answers, then
/// released together: as they are if it counted n replicas, as `notReplicated` otherwise (a
/// `split` reply: as its answers, those that changed state marked); a
/// connection that closes first fails them like anything else in flight. Once every reply of a
/// batch but its `WAIT` is in, the next batch may be written behind it (Redis runs it after the
/// `WAIT` returns, without waiting for one more round trip), so at most one `WAIT` is ahead of
/// the batch on the wire, and its reply always comes before that batch's replies.
struct RedisConnectionStateMachine<Waiter> {
    enum Phase: Equatable {
        case idle
        case connecting
        /// Connected; the handshake (AUTH, SELECT), if any, is the first batch in flight.
        case ready
        /// We asked the channel to close (timeout, bad bytes, failed handshake); replies that
        /// still arrive are dropped, their waiters fail when the channel is closed.
        case closing
        case shutdown
    }

    /// What the connection must do next.
    enum Action {
        case none
        /// Open a socket, then report `connected` or `connectFailed`.
        case connect
        /// Run `flush` at the end of this event-loop tick (so one tick's commands share a write).
        case scheduleFlush
        /// Write these bytes and arm the batch timer for `batch`.
        case write(ByteBuffer, batch: UInt64)
        /// Fail these waiters with this error.
        case fail([Waiter], RedisError)
        /// Close the channel (`closed` follows).
        case close
    }

    /// What to do after a reply.
    struct ReplyAction {
        /// The waiter the reply belongs to, and its result.
        var completion: (Waiter, Result<RedisValue, RedisError>)?
        /// A `WAIT` answered: the replies held for it, with their results (`notReplicated` when
        /// it counted too few replicas).
        var released: [(Waiter, Result<RedisValue, RedisError>)] = []
        /// A `WAIT` answered: whether it counted enough replicas (nil: this was no `WAIT`).
        var replicated: Bool?
        /// The reply was held for its batch's `WAIT`.
        var held = false
        /// The batch's last reply is in: cancel the batch timer.
        var batchFinished = false
        /// A `NOSCRIPT` reply was turned into `SCRIPT LOAD` plus the same call again.
        var scriptReloaded = false
        var then: Action = .none
    }

    /// Everything a script call needs to be sent again after `NOSCRIPT`: its arguments (encoded
    /// again then; keeping a slice of the outbox instead made every later write to the batch
    /// copy the whole buffer) and the script's source. A script that answered `NOSCRIPT` did
    /// not run, so sending it again cannot apply it twice; it is sent again once, never more.
    struct ScriptRetry {
        var command: [RedisArgument]
        var source: String
    }

    enum Entry {
        /// AUTH or SELECT of the handshake: an error reply closes the connection.
        case handshake
        /// The SCRIPT LOAD of a NOSCRIPT recovery: its reply is not anyone's answer.
        case scriptLoad
        case command(Waiter, retry: ScriptRetry?, replication: RedisReplication)
        /// The `WAIT` after a batch with state changes: its reply releases what was held for it.
        case wait
    }

    /// `WAIT replicas timeoutMilliseconds` after every batch that may change state.
    struct ReplicationWait: Equatable {
        var replicas: Int
        var timeoutMilliseconds: Int
    }

    let maxPendingCommands: Int
    let shedAfter: TimeAmount?
    let wait: ReplicationWait?
    private let waitCommand: [RedisArgument]?
    private(set) var phase: Phase = .idle
    private var outbox: ByteBuffer
    private var outboxEntries: [Entry] = []
    /// Whether something queued may change state (the batch then ends with `WAIT`).
    private var outboxWrites = false
    private var inFlight = CircularBuffer<Entry>(initialCapacity: 64)
    /// `WAIT`s in flight (0 or 1, at most 2 for a moment: see the type's comment).
    private var waitsInFlight = 0
    /// Replies of state changes waiting for their batch's `WAIT`, oldest first.
    private var held: [(Waiter, RedisValue, RedisReplication)] = []
    private var flushScheduled = false
    /// When the oldest batch with replies still to come was written (nil when nothing is in
    /// flight), and when the one written behind its `WAIT` was.
    private var batchSentAt: NIODeadline?
    private var nextBatchSentAt: NIODeadline?
    private(set) var batch: UInt64 = 0
    private var closeReason: RedisError?

    init(
        maxPendingCommands: Int, shedAfter: TimeAmount?, wait: ReplicationWait? = nil,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) {
        self.maxPendingCommands = maxPendingCommands
        self.shedAfter = shedAfter
        if let wait, wait.replicas > 0 {
            self.wait = wait
            // Redis reads a timeout of 0 as "forever": at least 1 ms.
            self.waitCommand = ["WAIT", .int(wait.replicas), .int(max(1, wait.timeoutMilliseconds))]
        } else {
            self.wait = nil
            self.waitCommand = nil
        }
        self.outbox = allocator.buffer(capacity: 4096)
    }

    var pendingCount: Int { outboxEntries.count + inFlight.count + held.count }

    /// Replies held for a `WAIT` (the tests look).
    var heldCount: Int { held.count }

    /// A batch may be written when every reply in flight is in, but for a `WAIT`'s.
    private var canWrite: Bool { inFlight.count == waitsInFlight }

    // MARK: events

    /// A caller's command. `script`: the source of the script an EVALSHA runs, for NOSCRIPT
    /// recovery. `now` is read only when shedding by age needs it.
    /// `replication`: whether the command may change state, and whether its reply then waits
    /// for the batch's `WAIT` (only with `wait` set).
    mutating func enqueue(
        _ command: [RedisArgument], waiter: Waiter, script: String? = nil, replication: RedisReplication = .none,
        now: @autoclosure () -> NIODeadline
    ) -> Action {
        switch phase {
        case .shutdown:
            return .fail([waiter], .shutdown)
        case .idle, .connecting, .ready, .closing:
            break
        }
        if shouldShed(now) { return .fail([waiter], .overloaded) }
        outbox.writeRESPCommand(command)
        outboxEntries.append(
            .command(waiter, retry: script.map { ScriptRetry(command: command, source: $0) }, replication: replication))
        if replication.mayWrite { outboxWrites = true }
        switch phase {
        case .idle:
            phase = .connecting
            return .connect
        case .ready where canWrite && !flushScheduled:
            flushScheduled = true
            return .scheduleFlush
        default:
            return .none
        }
    }

    /// Load shedding: a call that would wait behind too many others, or behind a batch Redis has
    /// not answered for `shedAfter`, fails at once (and is never sent) instead of joining a queue
    /// that only grows. Calls already admitted keep their place.
    private func shouldShed(_ now: () -> NIODeadline) -> Bool {
        if pendingCount >= maxPendingCommands { return true }
        if let shedAfter, let sentAt = batchSentAt, now() - sentAt > shedAfter { return true }
        return false
    }

    /// The scheduled flush runs: everything queued leaves as one batch, if nothing is in flight
    /// (but the previous batch's `WAIT`), followed by `WAIT` if it may change state.
    mutating func flush(now: NIODeadline) -> Action {
        flushScheduled = false
        guard phase == .ready, canWrite, !outboxEntries.isEmpty else { return .none }
        if outboxWrites, let waitCommand {
            outbox.writeRESPCommand(waitCommand)
            outboxEntries.append(.wait)
            waitsInFlight += 1
        }
        outboxWrites = false
        inFlight.append(contentsOf: outboxEntries)
        outboxEntries.removeAll(keepingCapacity: true)
        let bytes = outbox
        outbox = ByteBufferAllocator().buffer(capacity: max(4096, bytes.readableBytes))
        return send(bytes, now: now)
    }

    private mutating func send(_ bytes: ByteBuffer, now: NIODeadline) -> Action {
        batch &+= 1
        if batchSentAt == nil { batchSentAt = now } else { nextBatchSentAt = now }
        return .write(bytes, batch: batch)
    }

    /// The socket is open. AUTH and SELECT go out as a batch of their own, before anything
    /// queued, so no command runs unauthenticated or on the wrong database.
    mutating func connected(handshake: [[RedisArgument]], now: NIODeadline) -> Action {
        switch phase {
        case .connecting:
            phase = .ready
        case .shutdown:
            return .close
        case .idle, .ready, .closing:
            return .close
        }
        guard !handshake.isEmpty else { return flush(now: now) }
        var bytes = ByteBufferAllocator().buffer(capacity: 64)
        for command in handshake {
            bytes.writeRESPCommand(command)
            inFlight.append(.handshake)
        }
        return send(bytes, now: now)
    }

    mutating func connectFailed(_ error: RedisError) -> Action {
        guard phase == .connecting else { return .none }
        phase = .idle
        return .fail(takeQueued(), error)
    }

    /// One reply, in order.
    mutating func received(_ reply: RedisValue) -> ReplyAction {
        guard phase == .ready else { return ReplyAction() }
        guard let entry = inFlight.popFirst() else {
            return ReplyAction(then: close(.protocolError("reply without a command")))
        }
        var action = ReplyAction()
        let error: RedisError?
        if case .error(let message) = reply { error = .server(message) } else { error = nil }
        switch entry {
        case .handshake:
            if let error {
                // The code only: AUTH's arguments carry the password.
                return ReplyAction(then: close(.handshakeFailed(error.serverCode.map(String.init) ?? "error")))
            }
        case .scriptLoad:
            break
        case .wait:
            waitsInFlight -= 1
            // Every reply held now belongs to this WAIT's batch: the next batch's replies come
            // after this one (Redis runs nothing of this connection's while its WAIT blocks).
            let replicated = ReplicationWaitReply.replicated(reply, replicas: wait?.replicas ?? 1)
            action.replicated = replicated
            if !held.isEmpty {
                action.released = held.map { ($0.0, replicated ? .success($0.1) : $0.2.unreplicated($0.1)) }
                held.removeAll(keepingCapacity: true)
            }
            // The batch written behind this WAIT, if any, is now the oldest one on the wire.
            batchSentAt = nextBatchSentAt
            nextBatchSentAt = nil
        case .command(let waiter, let retry, let replication):
            if let error, error.serverCode == "NOSCRIPT", let retry {
                // The script did not run: load it and send the same call once more, in the next batch.
                outbox.writeRESPCommand(["SCRIPT", "LOAD", .string(retry.source)])
                outboxEntries.append(.scriptLoad)
                outbox.writeRESPCommand(retry.command)
                outboxEntries.append(.command(waiter, retry: nil, replication: replication))
                if replication.mayWrite { outboxWrites = true }
                action.scriptReloaded = true
            } else if let error {
                // An error reply is no acknowledgement of a change: it is handed over at once.
                action.completion = (waiter, .failure(error))
            } else if waitCommand != nil, replication.holds(reply) {
                // A state change: answered only once this batch's WAIT (it is on the wire,
                // since this command made its batch one that may write) has answered.
                held.append((waiter, reply, replication))
                action.held = true
            } else {
                action.completion = (waiter, .success(reply))
            }
        }
        if inFlight.isEmpty {
            action.batchFinished = true
            batchSentAt = nil
            nextBatchSentAt = nil
        }
        if canWrite && !outboxEntries.isEmpty && !flushScheduled {
            flushScheduled = true
            action.then = .scheduleFlush
        }
        return action
    }

    /// The batch timer of `batch` fired: if that batch is still waiting, the connection is reset.
    mutating func batchTimedOut(_ batch: UInt64) -> Action {
        guard phase == .ready, batch == self.batch, !inFlight.isEmpty else { return .none }
        return close(.timeout)
    }

    /// The reader met bytes that are not RESP, or the channel reported an error.
    mutating func failed(_ error: RedisError) -> Action {
        guard phase == .ready else { return .none }
        return close(error)
    }

    private mutating func close(_ reason: RedisError) -> Action {
        phase = .closing
        closeReason = reason
        return .close
    }

    /// The channel is closed: whatever was in flight may or may not have run (its waiters learn
    /// why), and so may the state changes held for a `WAIT` that never answered (never released
    /// as replicated); what was queued never left and fails with the same reason.
    mutating func closed() -> Action {
        guard phase == .ready || phase == .closing else { return .none }
        phase = .idle
        let reason = closeReason ?? .connectionClosed
        closeReason = nil
        let waiters = takeSent() + takeQueued()
        return waiters.isEmpty ? .none : .fail(waiters, reason)
    }

    /// The client shuts down: every waiter fails; the connection closes its channel if it has one.
    mutating func shutdown() -> Action {
        phase = .shutdown
        return .fail(takeSent() + takeQueued(), .shutdown)
    }

    /// The waiters of everything written: held replies first (they are older), then in flight.
    private mutating func takeSent() -> [Waiter] {
        batchSentAt = nil
        nextBatchSentAt = nil
        var waiters = held.map(\.0)
        held.removeAll()
        for entry in inFlight { if case .command(let waiter, _, _) = entry { waiters.append(waiter) } }
        inFlight.removeAll()
        waitsInFlight = 0
        return waiters
    }

    private mutating func takeQueued() -> [Waiter] {
        var waiters: [Waiter] = []
        for entry in outboxEntries { if case .command(let waiter, _, _) = entry { waiters.append(waiter) } }
        outboxEntries.removeAll()
        outboxWrites = false
        outbox.clear()
        return waiters
    }
}
