import Foundation
import NIOCore
import Testing

@testable import RedisClient

/// The Redis connection's protocol state, driven without sockets or event loops: waiters are
/// plain numbers, time is a value, and every action is checked.
@Suite("Redis connection state machine")
struct ConnectionStateMachineTests {
    typealias Machine = RedisConnectionStateMachine<Int>
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    static func machine(maxPending: Int = 1000, shedAfter: TimeAmount? = nil) -> Machine {
        Machine(maxPendingCommands: maxPending, shedAfter: shedAfter)
    }

    static func text(_ action: Machine.Action) -> String? {
        guard case .write(let bytes, _) = action else { return nil }
        return String(decoding: bytes.readableBytesView, as: UTF8.self)
    }

    static let ok = RedisValue.status("OK")

    /// Enqueue one command, connect with no handshake, flush: the usual way to get a batch out.
    static func ready(_ machine: inout Machine, at now: NIODeadline) {
        #expect(machine.phase == .idle)
        guard case .connect = machine.enqueue(["PING"], waiter: 0, now: now) else {
            Issue.record("connect")
            return
        }
        _ = machine.connected(handshake: [], now: now)
        let reply = machine.received(.status("PONG"))
        #expect(reply.completion?.0 == 0)
        #expect(machine.phase == .ready)
    }

    @Test("handshake: AUTH and SELECT leave alone, before anything queued; then the queue leaves as one batch")
    func handshake() {
        var machine = Self.machine()
        guard case .connect = machine.enqueue(["GET", "a"], waiter: 1, now: t0) else {
            Issue.record("first call connects")
            return
        }
        guard case .none = machine.enqueue(["GET", "b"], waiter: 2, now: t0) else {
            Issue.record("queued while connecting")
            return
        }
        let first = machine.connected(handshake: [["AUTH", "secret"], ["SELECT", 3]], now: t0)
        let handshakeBytes = Self.text(first) ?? ""
        #expect(handshakeBytes.contains("AUTH") && handshakeBytes.contains("SELECT"))
        #expect(!handshakeBytes.contains("GET"), "nothing queued runs before the handshake is answered")
        let afterAuth = machine.received(Self.ok)
        #expect(afterAuth.completion == nil && !afterAuth.batchFinished)
        let afterSelect = machine.received(Self.ok)
        #expect(afterSelect.completion == nil && afterSelect.batchFinished)
        guard case .scheduleFlush = afterSelect.then else {
            Issue.record("queue flushes after the handshake")
            return
        }
        let batch = machine.flush(now: t0)
        let text = Self.text(batch) ?? ""
        #expect(text == "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n")
        #expect(machine.received(.bulk(Array("1".utf8))).completion?.0 == 1)
        #expect(machine.received(.bulk(Array("2".utf8))).completion?.0 == 2)
    }

    @Test("a refused handshake closes the connection and fails what was queued, naming only the error code")
    func handshakeRefused() {
        var machine = Self.machine()
        _ = machine.enqueue(["GET", "a"], waiter: 1, now: t0)
        _ = machine.connected(handshake: [["AUTH", "hunter2"]], now: t0)
        let reply = machine.received(.error("WRONGPASS invalid username-password pair"))
        guard case .close = reply.then else {
            Issue.record("closes")
            return
        }
        guard case .fail(let waiters, let error) = machine.closed() else {
            Issue.record("fails the queue")
            return
        }
        #expect(waiters == [1])
        #expect(error == .handshakeFailed("WRONGPASS"))
        #expect(!error.description.contains("hunter2"))
        #expect(machine.phase == .idle)
    }

    @Test("batching: calls made while a batch is on the wire wait, then leave together in one write")
    func batching() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        guard case .scheduleFlush = machine.enqueue(["INCR", "a"], waiter: 1, now: t0) else {
            Issue.record("flush scheduled")
            return
        }
        guard case .none = machine.enqueue(["INCR", "b"], waiter: 2, now: t0) else {
            Issue.record("one flush per tick")
            return
        }
        guard case .write(_, let firstBatch) = machine.flush(now: t0) else {
            Issue.record("first batch")
            return
        }
        for waiter in 3...5 {
            guard case .none = machine.enqueue(["INCR", "c"], waiter: waiter, now: t0) else {
                Issue.record("waits")
                return
            }
        }
        guard case .none = machine.flush(now: t0) else {
            Issue.record("no second write while a batch is in flight")
            return
        }
        #expect(machine.received(.integer(1)).completion?.0 == 1)
        let last = machine.received(.integer(1))
        #expect(last.completion?.0 == 2 && last.batchFinished)
        guard case .scheduleFlush = last.then else {
            Issue.record("the queue is flushed next")
            return
        }
        guard case .write(let bytes, let secondBatch) = machine.flush(now: t0) else {
            Issue.record("second batch")
            return
        }
        #expect(secondBatch == firstBatch + 1)
        #expect(String(decoding: bytes.readableBytesView, as: UTF8.self).components(separatedBy: "INCR").count == 4, "three commands, one write")
        #expect((3...5).map { _ in machine.received(.integer(2)).completion?.0 } == [3, 4, 5], "replies complete in order")
    }

    @Test("a batch that times out closes the connection; replies arriving after that complete nothing")
    func lateReplies() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        _ = machine.enqueue(["GET", "slow"], waiter: 1, now: t0)
        guard case .write(_, let batch) = machine.flush(now: t0) else {
            Issue.record("write")
            return
        }
        guard case .none = machine.batchTimedOut(batch - 1) else {
            Issue.record("an old batch's timer does nothing")
            return
        }
        guard case .close = machine.batchTimedOut(batch) else {
            Issue.record("closes")
            return
        }
        _ = machine.enqueue(["GET", "queued"], waiter: 2, now: t0)
        let late = machine.received(.bulk(Array("late".utf8)))
        #expect(late.completion == nil, "a late reply is dropped: its waiter already counts as failed")
        guard case .fail(let waiters, let error) = machine.closed() else {
            Issue.record("fails")
            return
        }
        #expect(waiters == [1, 2])
        #expect(error == .timeout)
        guard case .connect = machine.enqueue(["GET", "a"], waiter: 3, now: t0) else {
            Issue.record("reconnects on the next call")
            return
        }
    }

    @Test("a connection dropped mid-batch fails exactly the calls still waiting")
    func dropMidBatch() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        for waiter in 1...3 { _ = machine.enqueue(["INCR", "a"], waiter: waiter, now: t0) }
        _ = machine.flush(now: t0)
        _ = machine.enqueue(["INCR", "b"], waiter: 4, now: t0)
        #expect(machine.received(.integer(1)).completion?.0 == 1)
        guard case .fail(let waiters, let error) = machine.closed() else {
            Issue.record("fails")
            return
        }
        #expect(waiters == [2, 3, 4])
        #expect(error == .connectionClosed)
        guard case .none = machine.closed() else {
            Issue.record("closing twice fails nothing twice")
            return
        }
    }

    @Test("NOSCRIPT: the script is loaded and the same call sent once more; a second NOSCRIPT is the answer")
    func noscriptRecovery() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        let evalsha: [RedisArgument] = ["EVALSHA", "abc", 1, "{k}", "x"]
        _ = machine.enqueue(evalsha, waiter: 1, script: "return 1", now: t0)
        guard case .write(let first, _) = machine.flush(now: t0) else {
            Issue.record("write")
            return
        }
        let noscript = machine.received(.error("NOSCRIPT No matching script"))
        #expect(noscript.completion == nil && noscript.scriptReloaded && noscript.batchFinished)
        guard case .scheduleFlush = noscript.then else {
            Issue.record("retry scheduled")
            return
        }
        let retry = Self.text(machine.flush(now: t0)) ?? ""
        #expect(retry.hasPrefix("*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$8\r\nreturn 1\r\n"))
        #expect(retry.hasSuffix(String(decoding: first.readableBytesView, as: UTF8.self)), "the very same call")
        #expect(machine.received(.bulk(Array("abc".utf8))).completion == nil, "the load's reply is no one's answer")
        let again = machine.received(.error("NOSCRIPT No matching script"))
        guard case (1, .failure(let error))? = again.completion else {
            Issue.record("the second NOSCRIPT is the answer")
            return
        }
        #expect(error.serverCode == "NOSCRIPT")
        #expect(!again.scriptReloaded)
        // A plain command's NOSCRIPT-looking error is just an error.
        _ = machine.enqueue(["GET", "a"], waiter: 2, now: t0)
        _ = machine.flush(now: t0)
        guard case (2, .failure)? = machine.received(.error("NOSCRIPT odd")).completion else {
            Issue.record("plain error")
            return
        }
    }

    @Test("load shedding: past the pending limit, or behind a batch unanswered too long, a call fails unsent")
    func shedding() {
        var machine = Self.machine(maxPending: 3, shedAfter: .milliseconds(200))
        Self.ready(&machine, at: t0)
        for waiter in 1...3 { _ = machine.enqueue(["INCR", "a"], waiter: waiter, now: t0) }
        guard case .fail([4], .overloaded) = machine.enqueue(["INCR", "a"], waiter: 4, now: t0) else {
            Issue.record("over the limit")
            return
        }
        _ = machine.flush(now: t0)
        _ = machine.received(.integer(1))
        guard case .none = machine.enqueue(["INCR", "a"], waiter: 5, now: t0 + .milliseconds(150)) else {
            Issue.record("young batch: admitted")
            return
        }
        guard case .fail([6], .overloaded) = machine.enqueue(["INCR", "a"], waiter: 6, now: t0 + .milliseconds(250)) else {
            Issue.record("old batch: shed")
            return
        }
        _ = machine.received(.integer(1))
        let last = machine.received(.integer(1))
        #expect(last.batchFinished)
        if case .fail = machine.enqueue(["INCR", "a"], waiter: 7, now: t0 + .seconds(10)) {
            Issue.record("with nothing in flight, age sheds nothing")
        }
    }

    @Test("a failed connect fails the queue; shutdown fails everything and refuses what comes after")
    func connectFailureAndShutdown() {
        var machine = Self.machine()
        _ = machine.enqueue(["GET", "a"], waiter: 1, now: t0)
        _ = machine.enqueue(["GET", "b"], waiter: 2, now: t0)
        let refused = RedisError.connectFailed(host: "127.0.0.1", port: 1, reason: "refused")
        guard case .fail([1, 2], refused) = machine.connectFailed(refused) else {
            Issue.record("queue fails")
            return
        }
        #expect(machine.phase == .idle)
        guard case .connect = machine.enqueue(["GET", "c"], waiter: 3, now: t0) else {
            Issue.record("tries again")
            return
        }
        _ = machine.connected(handshake: [], now: t0)
        _ = machine.enqueue(["GET", "d"], waiter: 4, now: t0)
        guard case .fail(let waiters, .shutdown) = machine.shutdown() else {
            Issue.record("shutdown fails all")
            return
        }
        #expect(Set(waiters) == [3, 4])
        guard case .fail([5], .shutdown) = machine.enqueue(["GET", "e"], waiter: 5, now: t0) else {
            Issue.record("refused after")
            return
        }
        guard case .close = machine.connected(handshake: [], now: t0) else {
            Issue.record("a socket that opens after shutdown is closed")
            return
        }
    }

    @Test("a reply with no command waiting is a protocol error that closes the connection")
    func unexpectedReply() {
        var machine = Self.machine()
        Self.ready(&machine, at: t0)
        guard case .close = machine.received(.status("OK")).then else {
            Issue.record("closes")
            return
        }
        #expect(machine.phase == .closing)
        guard case .none = machine.closed() else {
            Issue.record("nothing to fail")
            return
        }
    }
}
