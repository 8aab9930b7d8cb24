import Foundation
import GatewayCore
import HTTPServing
import NIOHTTP1
import RedisClient
import ReservationCore
import Synchronization
import TestSupport
import Testing

/// Slow, idle, huge and numerous clients, over real sockets against a real gateway: none of them
/// takes the gateway away from the clients that behave. Assertions are about what happens and in
/// what order; the few bounds on time are generous and only catch a hang.
@Suite("Gateway connection hygiene")
struct ConnectionHygieneTests {
    static func reserveRequest(_ basketId: String, consumer: String, keepAlive: Bool = false) -> String {
        let body = #"{"consumerId":"\#(consumer)"}"#
        return "POST /v1/baskets/\(basketId)/reservations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\n" + (keepAlive ? "" : "Connection: close\r\n") + "\r\n" + body
    }

    @Test("beyond the connection limit new connections are closed at once; admitted ones keep working")
    func connectionLimit() async throws {
        let gateway = try await GatewayHarness.start { $0.maxConnections = 20 }
        let basketId = TestEnvironment.uniqueId("b")
        try await gateway.createBasket(basketId, stock: 5)
        #expect(try await eventually { gateway.server.statistics.openConnections == 0 })
        var admitted: [RawConnection] = []
        for _ in 0..<20 { admitted.append(try await RawConnection.open(port: gateway.port)) }
        #expect(try await eventually { gateway.server.statistics.openConnections == 20 })
        let refused = try await RawConnection.open(port: gateway.port)
        #expect(try await refused.waitClosed(), "the 21st connection is closed by the server")
        #expect(refused.bytes.isEmpty)
        #expect(gateway.server.statistics.refusedConnections >= 1)
        // An admitted connection is served normally.
        await admitted[0].send(Self.reserveRequest(basketId, consumer: "c1"))
        #expect(try await admitted[0].responses().first?.status == 201)
        for connection in admitted { await connection.close() }
        #expect(try await eventually { gateway.server.statistics.openConnections == 0 })
        #expect(try await gateway.request(.GET, "/healthz").status == 200, "room again once they closed")
        await gateway.stop()
    }

    @Test("a client that never finishes its head, or its body, is closed by the request timeout")
    func slowClientsAreClosed() async throws {
        // A long idle timeout, so only the request timeout can be what closes them.
        let gateway = try await GatewayHarness.start {
            $0.requestTimeoutMilliseconds = 300
            $0.idleTimeoutMilliseconds = 3_600_000
        }
        let slowHead = try await RawConnection.open(port: gateway.port)
        await slowHead.send("POST /v1/baskets/x/reservations HTTP/1.1\r\nHost: t\r\nX-Drip: ")
        let slowBody = try await RawConnection.open(port: gateway.port)
        await slowBody.send("POST /v1/baskets/x/reservations HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{\"consumerId\":")
        #expect(try await slowHead.waitClosed())
        #expect(try await slowBody.waitClosed())
        #expect(slowHead.bytes.isEmpty && slowBody.bytes.isEmpty)
        #expect(gateway.server.statistics.timedOutConnections == 2)
        await gateway.stop()
    }

    @Test("an idle connection is closed by the idle timeout, also after an answer on keep-alive")
    func idleClientsAreClosed() async throws {
        let gateway = try await GatewayHarness.start {
            $0.idleTimeoutMilliseconds = 1_000
            $0.requestTimeoutMilliseconds = 3_600_000
        }
        let idle = try await RawConnection.open(port: gateway.port)
        #expect(try await idle.waitClosed())
        #expect(idle.bytes.isEmpty)
        // Keep-alive: the idle timer starts again after each answer. (If this loaded machine lets
        // the idle timer beat the request's first byte, that connection is closed unanswered and
        // the next attempt tries again: the timer working, not a failure.)
        let answeredThenClosed = try await eventually(interval: .milliseconds(50)) {
            let keepAlive = try await RawConnection.open(port: gateway.port)
            await keepAlive.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            let answered = try await keepAlive.responses().first?.status == 200
            guard answered else { return false }
            return try await keepAlive.waitClosed()
        }
        #expect(answeredThenClosed)
        #expect(gateway.server.statistics.timedOutConnections == 0, "idle closes are not request timeouts")
        await gateway.stop()
    }

    @Test("pipelined requests are answered in order, a Redis one before a quick one; a client that shuts its side gets every answer")
    func pipelinedRequests() async throws {
        let gateway = try await GatewayHarness.start()
        let basketId = TestEnvironment.uniqueId("b")
        _ = try await gateway.createBasket(basketId, stock: 10, maxPerConsumer: 1)
        func reserve(_ consumer: String) -> String {
            let body = #"{"consumerId":"\#(consumer)"}"#
            return "POST /v1/baskets/\(basketId)/reservations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        let health = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        let connection = try await RawConnection.open(port: gateway.port)
        await connection.send(reserve("p1") + health + reserve("p1") + "GET /v1/baskets/\(basketId) HTTP/1.1\r\nHost: t\r\n\r\n")
        let responses = try await connection.responses(count: 4)
        #expect(responses.map(\.status) == [201, 200, 409, 200])
        #expect(responses.count == 4 && responses[2].text.contains("limit_exceeded"))
        #expect(responses.count == 4 && responses[3].text.contains(#""pending":1"#))
        #expect(!connection.isClosed, "keep-alive")
        await connection.close()

        let halfClosed = try await RawConnection.open(port: gateway.port)
        await halfClosed.send(reserve("p2") + health + reserve("p3"))
        await halfClosed.shutdownOutput()
        #expect(try await halfClosed.waitClosed())
        #expect(halfClosed.statuses == [201, 200, 201])
        await halfClosed.close()

        // HEAD has no body; HTTP/1.0 keeps the connection only when asked to.
        let versions = try await RawConnection.open(port: gateway.port)
        await versions.send(
            "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                + "GET /healthz HTTP/1.0\r\n\r\n")
        #expect(try await versions.waitClosed())
        let head = "content-type: application/json\r\ncontent-length: 15\r\n"
        #expect(
            versions.text
                == "HTTP/1.1 200 OK\r\n\(head)\r\n" + "HTTP/1.0 200 OK\r\n\(head)connection: keep-alive\r\n\r\n{\"status\":\"ok\"}"
                + "HTTP/1.0 200 OK\r\n\(head)connection: close\r\n\r\n{\"status\":\"ok\"}")
        await versions.close()
        await gateway.stop()
    }

    @Test("a client that pipelines, shuts its side and never reads its answers is still closed (the last write is bounded)")
    func halfClosedNonReader() async throws {
        // No request or idle timeout, and a high-water mark the answers never reach: only the
        // bound on the last write can close this connection.
        let gateway = try await GatewayHarness.start(
            configure: {
                $0.idleTimeoutMilliseconds = 3_600_000
                $0.requestTimeoutMilliseconds = 3_600_000
            }, limits: { $0.outboundHighWaterMark = 4 << 20 })
        let connection = try await RawConnection.open(port: gateway.port, neverRead: true)
        // Far more answers than the client's and our kernel buffers take.
        await connection.send(String(repeating: "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", count: 3_000))
        await connection.shutdownOutput()
        #expect(try await eventually { gateway.server.statistics.openConnections == 0 }, "closed by the server")
        await connection.close()
        await gateway.stop()
    }

    @Test("a request head over the limit gets 431 request_header_too_large, headers or target")
    func headTooLarge() async throws {
        let gateway = try await GatewayHarness.start { $0.maxHeadBytes = 4096 }
        let padding = String(repeating: "a", count: 5000)
        for request in [
            "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: \(padding)\r\n\r\n",
            "GET /\(padding) HTTP/1.1\r\nHost: t\r\n\r\n",
            "GET /healthz HTTP/1.1\r\n" + String(repeating: "X-Many: 1\r\n", count: 500) + "\r\n",
        ] {
            let connection = try await RawConnection.open(port: gateway.port)
            await connection.send(request)
            let response = try #require(try await connection.responses().first)
            #expect(response.status == 431)
            #expect(response.text.contains("request_header_too_large"))
            #expect(response.header("connection") == "close")
            #expect(try await connection.waitClosed())
        }
        // Just under the limit is fine.
        let fits = try await RawConnection.open(port: gateway.port)
        await fits.send("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: \(String(repeating: "a", count: 3000))\r\n\r\n")
        #expect(try await fits.responses().first?.status == 200)
        await gateway.stop()
    }

    @Test("413 is decided from Content-Length before the body is sent, and for chunked bodies once 16 KiB is passed")
    func bodyTooLargeEarly() async throws {
        let gateway = try await GatewayHarness.start()
        // The head promises a gigabyte; not a byte of it is sent, and the answer comes anyway.
        let lying = try await RawConnection.open(port: gateway.port)
        await lying.send("POST /v1/baskets/b/reservations HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n")
        let refused = try #require(try await lying.responses().first)
        #expect(refused.status == 413)
        #expect(refused.text.contains("payload_too_large"))
        #expect(refused.header("connection") == "close")
        // Chunked: refused as soon as the chunks pass 16 KiB, before any end arrives.
        let chunked = try await RawConnection.open(port: gateway.port)
        await chunked.send("POST /v1/baskets/b/reservations HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        let chunk = String(repeating: "x", count: 4096)
        for _ in 0..<5 { await chunked.send("1000\r\n\(chunk)\r\n") }
        let chunkedAnswer = try #require(try await chunked.responses().first)
        #expect(chunkedAnswer.status == 413)
        // Absurd or negative lengths are refused by the HTTP parser, never trusted.
        for length in ["-1", "99999999999999999999999", "1e3", "0x10"] {
            let connection = try await RawConnection.open(port: gateway.port)
            await connection.send("POST /v1/baskets/b/reservations HTTP/1.1\r\nHost: t\r\nContent-Length: \(length)\r\n\r\n")
            let status = try await connection.responses().first?.status
            #expect(status == 400 || status == 413, "Content-Length: \(length) → \(status.map(String.init) ?? "closed")")
        }
        #expect(try await gateway.request(.GET, "/healthz").status == 200)
        await gateway.stop()
    }

    @Test("a thousand idle connections and two hundred half-sent heads do not hold up reservations")
    func idleCrowdDoesNotStall() async throws {
        // Timeouts long enough that none of the crowd is closed for being slow: the point is that
        // they stay open and still cost the others nothing.
        let gateway = try await GatewayHarness.start {
            $0.idleTimeoutMilliseconds = 3_600_000
            $0.requestTimeoutMilliseconds = 3_600_000
        }
        let basketId = TestEnvironment.uniqueId("b")
        try await gateway.createBasket(basketId, stock: 1_000)
        var crowd: [RawConnection] = []
        for _ in 0..<1_000 { crowd.append(try await RawConnection.open(port: gateway.port)) }
        for _ in 0..<200 {
            let connection = try await RawConnection.open(port: gateway.port)
            await connection.send("POST /v1/baskets/\(basketId)/reservations HTTP/1.1\r\nHost: t\r\nContent-Le")
            crowd.append(connection)
        }
        #expect(try await eventually { gateway.server.statistics.openConnections >= 1_200 })
        var latencies: [Duration] = []
        for index in 0..<50 {
            let started = ContinuousClock.now
            let answer = try await gateway.reserve(basketId, consumer: "normal-\(index)")
            latencies.append(ContinuousClock.now - started)
            #expect(answer.status == 201)
        }
        latencies.sort()
        // The median is the user's experience; the maximum only guards against a stall (a loaded
        // 2-core machine may pause any one request).
        #expect(latencies[latencies.count / 2] < .seconds(1), "median \(latencies[latencies.count / 2])")
        #expect(latencies.last! < .seconds(30), "max \(latencies.last!)")
        #expect(crowd.allSatisfy { !$0.isClosed }, "the default timeouts leave them open: they were not what made room")
        for connection in crowd { await connection.close() }
        await gateway.stop()
    }

    @Test("overload sheds by count: with Redis stalled, calls beyond the bound get 503 at once; admitted ones complete")
    func overloadShedsByCount() async throws {
        try await Self.shedWhileRedisIsFrozen(checkNothingFinished: true) {
            $0.redisMaxPending = 4
        }
    }

    @Test("overload sheds by age: once the batch on the wire is older than the limit, new calls get 503 at once")
    func overloadShedsByAge() async throws {
        try await Self.shedWhileRedisIsFrozen(checkNothingFinished: false) {
            $0.redisShedAfterMilliseconds = 200
        }
    }

    /// Freezes a Redis of the test's own (SIGSTOP), sends attempts one after another without
    /// awaiting them until one is refused with 503 `unavailable` and `Retry-After`, lets Redis go
    /// on, and checks that every admitted call completed (201) and nothing else was answered.
    static func shedWhileRedisIsFrozen(checkNothingFinished: Bool, _ configure: (inout GatewayConfiguration) -> Void) async throws {
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        let gateway = try await GatewayHarness.start(redisURL: server.url, expiryLoop: false) {
            $0.soldOutCacheMilliseconds = 0
            configure(&$0)
        }
        let basketId = TestEnvironment.uniqueId("b")
        // Far more stock than attempts: on a slow machine many attempts are still queued in the
        // test's client when the first 503 arrives, and reach the gateway only after the resume.
        try await gateway.createBasket(basketId, stock: 1_000_000, maxPerConsumer: 100)
        try server.pause()
        let finished = Counter()
        let answers = ResponseLog()
        let tasks = Mutex<[Task<TestHTTPResponse, any Error>]>([])
        let shed = try await eventually(interval: .milliseconds(50)) {
            let index = tasks.withLock { $0.count }
            let task = Task {
                let answer = try await gateway.reserve(basketId, consumer: "c-\(index)")
                answers.append(answer)
                if answer.status != 503 { finished.increment() }
                return answer
            }
            tasks.withLock { $0.append(task) }
            return answers.all.contains {
                $0.status == 503 && $0.errorCode == "unavailable" && $0.headers.first(name: "retry-after") == "1"
            }
        }
        #expect(shed)
        if checkNothingFinished {
            #expect(finished.value == 0, "the refusal came while the admitted calls still waited (Redis is stopped)")
        }
        try server.resume()
        let all = try await tasks.withLock { $0 }.asyncMap { try await $0.value }
        // Every admitted call completes once Redis answers: none was dropped.
        let unexpected = all.filter { $0.status != 201 && $0.status != 503 }.map { "\($0.status) \($0.text)" }
        #expect(unexpected.isEmpty, "\(unexpected)")
        #expect(all.filter { $0.status == 201 }.count == (try await gateway.basket(basketId)["pending"]?.int))
        #expect(all.contains { $0.status == 201 })
        await gateway.stop()
        server.stop()
    }

    @Test("Redis refusing for now (out of memory, wrong password) is 503 unavailable, never 500")
    func transientRedisErrors() async throws {
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        let gateway = try await GatewayHarness.start(redisURL: server.url, expiryLoop: false)
        let basketId = TestEnvironment.uniqueId("b")
        try await gateway.createBasket(basketId, stock: 10)
        #expect(server.command("CONFIG SET maxmemory 1").hasPrefix("+OK"))
        let full = try await gateway.reserve(basketId, consumer: "c")
        #expect(full.status == 503, "\(full.text)")
        #expect(full.errorCode == "unavailable")
        #expect(server.command("CONFIG SET maxmemory 0").hasPrefix("+OK"))
        #expect(try await gateway.reserve(basketId, consumer: "c").status == 201)
        await gateway.stop()
        // A handshake Redis refuses (wrong password) is 503 too, and names no secret.
        #expect(server.command("CONFIG SET requirepass right-password").hasPrefix("+OK"))
        let wrong = try await GatewayHarness.start(
            redisURL: server.url.replacingOccurrences(of: "redis://", with: "redis://:wrong-password@"), expiryLoop: false, loadScripts: false)
        let refused = try await wrong.reserve(basketId, consumer: "d")
        #expect(refused.status == 503, "\(refused.text)")
        #expect(!refused.text.contains("wrong-password"))
        await wrong.stop()
        server.stop()
    }
}

final class ResponseLog: Sendable {
    private let answers = Mutex<[TestHTTPResponse]>([])
    var all: [TestHTTPResponse] { answers.withLock { $0 } }
    func append(_ answer: TestHTTPResponse) { answers.withLock { $0.append(answer) } }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}

final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .acquiring) }
    func increment() { count.wrappingAdd(1, ordering: .releasing) }
    func add(_ amount: Int) { count.wrappingAdd(amount, ordering: .releasing) }
}
