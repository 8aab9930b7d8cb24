import NIOCore
import Testing

@testable import RedisClient

/// REDIS_WAIT_REPLICAS in the connection's state machine, without sockets: which batches get a
/// `WAIT`, which replies it holds, what its answer releases, and what a timeout or a dropped
/// connection does to what it holds. Waiters are plain numbers.
@Suite("Redis connection state machine: replicated acknowledgements (WAIT)")
struct ReplicationWaitTests {
    typealias Machine = RedisConnectionStateMachine<Int>
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    static let waitBytes = "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$3\r\n200\r\n"
    static let granted = RedisValue.array([.bulk(Array("granted".utf8)), .bulk(Array("id-1".utf8))])
    static let soldOut = RedisValue.array([.bulk(Array("sold_out".utf8))])
    /// As the reserve call declares it: a grant is held, a refusal is not.
    static let reserve = RedisReplication.when { reply in reply.array?.first?.string == "granted" }

    static func machine(replicas: Int = 1) -> Machine {
        Machine(maxPendingCommands: 1000, shedAfter: nil, wait: .init(replicas: replicas, timeoutMilliseconds: 200))
    }

    static func text(_ action: Machine.Action) -> String? {
        guard case .write(let bytes, _) = action else { return nil }
        return String(decoding: bytes.readableBytesView, as: UTF8.self)
    }

    /// Connected with nothing in flight; the PING that opened it answered.
    static func ready(_ machine: inout Machine, at now: NIODeadline) {
        _ = machine.enqueue(["PING"], waiter: 0, now: now)
        let first = machine.connected(handshake: [], now: now)
        #expect(text(first)?.contains("WAIT") == false, "a read's batch has no WAIT")
        #expect(machine.received(.status("PONG")).completion?.0 == 0)
    }

    static func results(_ released: [(Int, Result<RedisValue, RedisError>)]) -> [Int: Bool] {
        var map: [Int: Bool] = [:]
        for (waiter, result) in released {
            if case .success = result { map[waiter] = true } else { map[waiter] = false }
        }
        return map
    }

    @Test("a batch of reads has no WAIT; a batch with a write ends with one, and only the write's reply waits for it")
    func writesAreHeldUntilWait() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        _ = machine.enqueue(["GET", "a"], waiter: 1, now: t0)
        let reads = Self.text(machine.flush(now: t0)) ?? ""
        #expect(!reads.contains("WAIT"))
        #expect(machine.received(.null).completion?.0 == 1)

        _ = machine.enqueue(["EVALSHA", "x", "0"], waiter: 2, replication: .always, now: t0)
        _ = machine.enqueue(["HMGET", "k", "f"], waiter: 3, now: t0)
        let batch = Self.text(machine.flush(now: t0)) ?? ""
        #expect(batch.hasSuffix(Self.waitBytes), "one WAIT, after the batch: \(batch)")
        #expect(batch.split(separator: "W").filter { $0.hasPrefix("AIT") }.count == 1)
        let write = machine.received(.status("OK"))
        #expect(write.completion == nil && write.held && !write.batchFinished)
        let read = machine.received(.array([.null]))
        #expect(read.completion?.0 == 3, "a read in the same batch is answered at once")
        #expect(machine.heldCount == 1)
        let wait = machine.received(.integer(1))
        #expect(wait.replicated == true && wait.batchFinished)
        #expect(Self.results(wait.released) == [2: true])
        #expect(machine.heldCount == 0 && machine.pendingCount == 0)
    }

    @Test("the reply decides: a refusal that changed nothing is answered at once, a grant waits; too few replicas fail only the grant")
    func replyDecides() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        _ = machine.enqueue(["EVALSHA", "reserve", "0"], waiter: 1, replication: Self.reserve, now: t0)
        _ = machine.enqueue(["EVALSHA", "reserve", "0"], waiter: 2, replication: Self.reserve, now: t0)
        #expect(Self.text(machine.flush(now: t0))?.hasSuffix(Self.waitBytes) == true)
        let grant = machine.received(Self.granted)
        #expect(grant.held && grant.completion == nil)
        let refusal = machine.received(Self.soldOut)
        #expect(!refusal.held && refusal.completion?.0 == 2)
        let wait = machine.received(.integer(0))
        #expect(wait.replicated == false)
        guard wait.released.count == 1, case .failure(.notReplicated) = wait.released[0].1 else {
            Issue.record("the grant fails as not replicated: \(wait.released)")
            return
        }
        #expect(wait.released[0].0 == 1)
    }

    @Test("a split reply (a coalesced call) that too few replicas acknowledged is handed over with its changes marked, not failed whole")
    func splitReplyIsMarked() {
        let split = RedisReplication.split(
            { $0.array?.contains { $0.array?.first?.string == "granted" } == true },
            unreplicated: { reply in .array((reply.array ?? []).map { $0.array?.first?.string == "granted" ? .error("NOTREPLICATED") : $0 }) })
        let mixed = RedisValue.array([Self.granted, Self.soldOut])
        for (acknowledged, expected) in [(0, RedisValue.array([.error("NOTREPLICATED"), Self.soldOut])), (1, mixed)] {
            var machine = Self.machine()
            Self.ready(&machine, at: t0)
            _ = machine.enqueue(["EVALSHA", "reserve", "0"], waiter: 1, replication: split, now: t0)
            _ = machine.enqueue(["EVALSHA", "reserve", "0"], waiter: 2, replication: split, now: t0)
            #expect(Self.text(machine.flush(now: t0))?.hasSuffix(Self.waitBytes) == true)
            let held = machine.received(mixed)
            #expect(held.held && held.completion == nil, "a reply with a change waits")
            let refusals = machine.received(.array([Self.soldOut]))
            #expect(!refusals.held && refusals.completion?.0 == 2, "a reply of refusals only is answered at once")
            let wait = machine.received(.integer(Int64(acknowledged)))
            #expect(wait.replicated == (acknowledged == 1))
            guard wait.released.count == 1, wait.released[0].0 == 1, case .success(let reply) = wait.released[0].1 else {
                Issue.record("released \(wait.released)")
                continue
            }
            #expect(reply == expected, "\(acknowledged) replicas: \(reply)")
        }
    }

    @Test("WAIT's reply is read defensively: an error, a string or a huge number never releases as replicated unless it counts enough")
    func waitReplyParsing() {
        for (reply, replicated) in [
            (RedisValue.error("ERR WAIT cannot be used with replica instances"), false), (.bulk(Array("1".utf8)), false),
            (.status("OK"), false), (.null, false), (.integer(-1), false), (.integer(1), false), (.integer(2), true),
            (.integer(Int64.max), true), (.array([.integer(2)]), false),
        ] {
            var machine = Self.machine(replicas: 2)
            Self.ready(&machine, at: t0)
            _ = machine.enqueue(["SET", "a", "1"], waiter: 1, replication: .always, now: t0)
            _ = machine.flush(now: t0)
            #expect(machine.received(.status("OK")).held)
            let wait = machine.received(reply)
            #expect(wait.replicated == replicated, "\(reply)")
            #expect(Self.results(wait.released) == [1: replicated], "\(reply)")
        }
    }

    @Test("an error reply of a write (MOVED, a script error) is handed over at once, never held as if replicated")
    func errorRepliesAreNotHeld() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        _ = machine.enqueue(["EVALSHA", "x", "0"], waiter: 1, replication: .always, now: t0)
        _ = machine.flush(now: t0)
        let moved = machine.received(.error("MOVED 3999 127.0.0.1:7001"))
        guard case (1, .failure(.server(let message)))? = moved.completion else {
            Issue.record("the redirect goes to the caller at once")
            return
        }
        #expect(message.hasPrefix("MOVED") && !moved.held)
        let wait = machine.received(.integer(1))
        #expect(wait.released.isEmpty && wait.batchFinished)
    }

    @Test("a WAIT in flight while the next batch is written: it leaves once the commands are answered, and each WAIT releases only its own batch")
    func nextBatchBehindWait() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        _ = machine.enqueue(["SET", "a", "1"], waiter: 1, replication: .always, now: t0)
        let firstAction = machine.flush(now: t0)
        guard case .write(_, let firstBatch) = firstAction else {
            Issue.record("first batch")
            return
        }
        // Queued while the first batch is on the wire: it waits.
        guard case .none = machine.enqueue(["SET", "b", "2"], waiter: 2, replication: .always, now: t0) else {
            Issue.record("waits behind the batch in flight")
            return
        }
        #expect(machine.flush(now: t0).isNone, "not while a command reply is still to come")
        let first = machine.received(.status("OK"))
        #expect(first.held && !first.batchFinished)
        guard case .scheduleFlush = first.then else {
            Issue.record("only the WAIT is left: the next batch may go")
            return
        }
        let second = machine.flush(now: t0)
        #expect(Self.text(second)?.hasSuffix(Self.waitBytes) == true)
        guard case .write(_, let secondBatch) = second else { return }
        #expect(secondBatch == firstBatch + 1)
        // A third call now waits behind the second batch.
        _ = machine.enqueue(["GET", "c"], waiter: 3, now: t0)
        #expect(machine.flush(now: t0).isNone)
        let firstWait = machine.received(.integer(1))
        #expect(Self.results(firstWait.released) == [1: true], "the first WAIT releases the first batch only")
        #expect(!firstWait.batchFinished && machine.heldCount == 0)
        let secondWrite = machine.received(.status("OK"))
        #expect(secondWrite.held)
        guard case .scheduleFlush = secondWrite.then else {
            Issue.record("the read goes behind the second WAIT")
            return
        }
        #expect(Self.text(machine.flush(now: t0)).map { !$0.contains("WAIT") } == true, "a batch of reads has no WAIT")
        let secondWait = machine.received(.integer(0))
        #expect(Self.results(secondWait.released) == [2: false], "the second WAIT counted too few: its write fails")
        #expect(machine.received(.bulk(Array("x".utf8))).completion?.0 == 3)
        #expect(machine.pendingCount == 0)
    }

    @Test("a batch timeout with answers held resets the connection: they fail (timeout), never released as replicated")
    func timeoutWithAnswersHeld() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        _ = machine.enqueue(["SET", "a", "1"], waiter: 1, replication: .always, now: t0)
        _ = machine.enqueue(["SET", "b", "1"], waiter: 2, replication: .always, now: t0)
        guard case .write(_, let batch) = machine.flush(now: t0) else {
            Issue.record("batch")
            return
        }
        #expect(machine.received(.status("OK")).held)
        #expect(machine.received(.status("OK")).held)
        _ = machine.enqueue(["SET", "c", "1"], waiter: 3, replication: .always, now: t0)
        _ = machine.flush(now: t0)  // behind the WAIT, with its own
        guard case .close = machine.batchTimedOut(batch + 1) else {
            Issue.record("the batch timer of the newest batch resets the connection")
            return
        }
        // A late WAIT reply after the timeout is dropped: nothing is released as replicated.
        let late = machine.received(.integer(1))
        #expect(late.released.isEmpty && late.completion == nil)
        guard case .fail(let waiters, let error) = machine.closed() else {
            Issue.record("held answers fail")
            return
        }
        #expect(Set(waiters) == [1, 2, 3] && error == .timeout)
        #expect(machine.pendingCount == 0 && machine.heldCount == 0)
    }

    @Test("a connection that drops with answers held fails them (connection closed) with everything else in flight and queued")
    func dropWithAnswersHeld() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        _ = machine.enqueue(["SET", "a", "1"], waiter: 1, replication: .always, now: t0)
        _ = machine.flush(now: t0)
        #expect(machine.received(.status("OK")).held)
        _ = machine.enqueue(["GET", "b"], waiter: 2, now: t0)
        _ = machine.flush(now: t0)
        _ = machine.enqueue(["GET", "c"], waiter: 3, now: t0)
        guard case .fail(let waiters, let error) = machine.closed() else {
            Issue.record("everything fails")
            return
        }
        #expect(waiters == [1, 2, 3] && error == .connectionClosed)
        // After a reconnect, a fresh batch starts clean: its WAIT releases only its own.
        _ = machine.enqueue(["SET", "d", "1"], waiter: 4, replication: .always, now: t0)
        _ = machine.connected(handshake: [], now: t0)
        #expect(machine.received(.status("OK")).held)
        #expect(Self.results(machine.received(.integer(1)).released) == [4: true])
    }

    @Test("NOSCRIPT of a write: loaded and sent again in the next batch, which gets its own WAIT")
    func noscriptWrite() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        _ = machine.enqueue(["EVALSHA", "abc", "0"], waiter: 1, script: "return 1", replication: .always, now: t0)
        _ = machine.flush(now: t0)
        let noscript = machine.received(.error("NOSCRIPT No matching script"))
        #expect(noscript.scriptReloaded && noscript.completion == nil && !noscript.held)
        let wait = machine.received(.integer(1))
        #expect(wait.released.isEmpty)
        let retry = Self.text(machine.flush(now: t0)) ?? ""
        #expect(retry.contains("SCRIPT") && retry.hasSuffix(Self.waitBytes))
        _ = machine.received(.bulk(Array("abc".utf8)))
        #expect(machine.received(.integer(1)).held)
        #expect(Self.results(machine.received(.integer(1)).released) == [1: true])
    }

    @Test("with REDIS_WAIT_REPLICAS 0 nothing changes: no WAIT, writes answered at once")
    func off() {
        var machine = Machine(maxPendingCommands: 1000, shedAfter: nil, wait: .init(replicas: 0, timeoutMilliseconds: 200))
        _ = machine.enqueue(["SET", "a", "1"], waiter: 1, replication: .always, now: t0)
        let batch = Self.text(machine.connected(handshake: [], now: t0)) ?? ""
        #expect(!batch.contains("WAIT"))
        let reply = machine.received(.status("OK"))
        #expect(reply.completion?.0 == 1 && !reply.held && reply.batchFinished)
    }

    @Test("shedding by age counts from the oldest batch still waiting for a reply, its WAIT included")
    func sheddingAgeWithWait() {
        var machine = Machine(maxPendingCommands: 1000, shedAfter: .milliseconds(100), wait: .init(replicas: 1, timeoutMilliseconds: 200))
        Self.ready(&machine, at: t0)
        _ = machine.enqueue(["SET", "a", "1"], waiter: 1, replication: .always, now: t0)
        _ = machine.flush(now: t0)
        _ = machine.received(.status("OK"))
        _ = machine.enqueue(["GET", "b"], waiter: 2, now: t0 + .milliseconds(50))
        _ = machine.flush(now: t0 + .milliseconds(50))
        guard case .fail([3], .overloaded) = machine.enqueue(["GET", "c"], waiter: 3, now: t0 + .milliseconds(150)) else {
            Issue.record("the first batch's WAIT is 150 ms old: shed")
            return
        }
        _ = machine.received(.integer(1))
        // Now the oldest batch on the wire is the second, 100 ms old at +150: not past the limit.
        guard case .none = machine.enqueue(["GET", "d"], waiter: 4, now: t0 + .milliseconds(150)) else {
            Issue.record("the second batch is the oldest now")
            return
        }
    }
}

extension RedisConnectionStateMachine.Action {
    var isNone: Bool {
        if case .none = self { return true }
        return false
    }
}
