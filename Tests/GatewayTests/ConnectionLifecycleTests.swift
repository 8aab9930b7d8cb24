import HTTPServing
import Testing

/// The connection state machine, without a socket: which timer runs in each phase, how a head's
/// bytes are counted against the limit, and what a refusal leaves.
@Suite("Connection lifecycle")
struct ConnectionLifecycleTests {
    @Test("idle, then a request's bytes start the request timer, the head and end move it on, the answer makes it idle")
    func requestCycle() {
        var lifecycle = ConnectionLifecycle(maxHeadBytes: 100)
        #expect(lifecycle.phase == .idle && lifecycle.timer == .idle)
        #expect(lifecycle.bytesArrived(40) == .forward(40))
        #expect(lifecycle.phase == .receivingHead(bytes: 40) && lifecycle.timer == .request)
        lifecycle.headReceived()
        #expect(lifecycle.phase == .receivingBody && lifecycle.timer == .request, "the request timer covers the body too")
        #expect(lifecycle.bytesArrived(10_000) == .forwardAll, "body bytes are not counted against the head limit")
        lifecycle.requestReceived()
        #expect(lifecycle.phase == .handling && lifecycle.timer == .none, "no timer while the answer is produced")
        #expect(lifecycle.bytesArrived(50) == .forwardAll, "a pipelined request waits in NIO's pipelining handler")
        lifecycle.responseWritten()
        #expect(lifecycle.phase == .idle && lifecycle.timer == .idle)
    }

    @Test("a head is handed on at most one byte past the limit; past it, it is too large")
    func headLimit() {
        var lifecycle = ConnectionLifecycle(maxHeadBytes: 100)
        #expect(lifecycle.bytesArrived(60) == .forward(60))
        #expect(!lifecycle.headTooLarge)
        #expect(lifecycle.bytesArrived(500) == .forward(41), "40 more fill the limit, one more proves it is passed")
        #expect(lifecycle.headTooLarge)
        // A head that ends exactly at the limit is fine: the decoder finds its end first.
        var exact = ConnectionLifecycle(maxHeadBytes: 100)
        #expect(exact.bytesArrived(100) == .forward(100))
        exact.headReceived()
        #expect(!exact.headTooLarge)
        #expect(exact.bytesArrived(5_000) == .forwardAll)
    }

    @Test("after a refusal everything is dropped and only the linger timer runs")
    func refusal() {
        var lifecycle = ConnectionLifecycle(maxHeadBytes: 100)
        _ = lifecycle.bytesArrived(10)
        lifecycle.refused()
        #expect(lifecycle.timer == .linger)
        #expect(lifecycle.bytesArrived(1_000) == .discard)
        lifecycle.headReceived()
        lifecycle.requestReceived()
        lifecycle.responseWritten()
        #expect(lifecycle.phase == .lingering, "nothing brings a refused connection back")
    }
}
