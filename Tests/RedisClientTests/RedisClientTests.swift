import Foundation
import NIOCore
import RedisClient
import TestSupport
import Testing

@Suite("Redis client against a real Redis")
struct RedisClientTests {
    @Test("every reply type round-trips")
    func replyTypes() async throws {
        let redis = try await TestEnvironment.redisClient()
        let key = TestEnvironment.uniqueId("types")
        #expect(try await redis.send("SET", .string(key), "hello") == .status("OK"))
        #expect(try await redis.send("GET", .string(key)) == .bulk(Array("hello".utf8)))
        #expect(try await redis.send("GET", .string(key + ":missing")) == .null)
        #expect(try await redis.send("INCR", .string(key + ":n")) == .integer(1))
        #expect(try await redis.send("INCRBY", .string(key + ":n"), -5) == .integer(-4))
        _ = try await redis.send("RPUSH", .string(key + ":l"), "a", "b")
        #expect(try await redis.send("MGET", .string(key), .string(key + ":missing")) == .array([.bulk(Array("hello".utf8)), .null]))
        #expect(try await redis.send("LRANGE", .string(key + ":l"), 0, -1) == .array([.bulk([97]), .bulk([98])]))
        #expect(try await redis.send("LRANGE", .string(key + ":missing"), 0, -1) == .array([]))
        let nested = try await redis.send("EVAL", "return {1, 'x', {2, 'y'}}", 0)
        #expect(nested == .array([.integer(1), .bulk([120]), .array([.integer(2), .bulk([121])])]))
        _ = try await redis.send("DEL", .string(key), .string(key + ":n"), .string(key + ":l"))
    }

    @Test("an error reply surfaces as a typed error")
    func errorReply() async throws {
        let redis = try await TestEnvironment.redisClient()
        let key = TestEnvironment.uniqueId("err")
        _ = try await redis.send("SET", .string(key), "text")
        await #expect(throws: RedisError.self) { try await redis.send("INCR", .string(key)) }
        do {
            _ = try await redis.send("LPUSH", .string(key), "x")
            Issue.record("expected WRONGTYPE")
        } catch let error as RedisError {
            #expect(error.serverCode == "WRONGTYPE")
        }
        // An error inside an array stays a value, and the connection keeps working.
        let mixed = try await redis.send("EVAL", "return {1, redis.pcall('INCR', KEYS[1])}", 1, .string(key))
        guard case .array(let items) = mixed, items.count == 2, case .error(let message) = items[1] else {
            Issue.record("unexpected \(mixed)")
            return
        }
        #expect(message.hasPrefix("ERR"))
        #expect(try await redis.send("PING") == .status("PONG"))
        _ = try await redis.send("DEL", .string(key))
    }

    @Test("values with NUL bytes and 1 MiB values round-trip")
    func binarySafety() async throws {
        let redis = try await TestEnvironment.redisClient()
        let key = TestEnvironment.uniqueId("bin")
        let withNul: [UInt8] = [0, 1, 2, 0, 255, 13, 10, 0]
        _ = try await redis.send("SET", .bytes(Array(key.utf8) + [0, 7]), .bytes(withNul))
        #expect(try await redis.send("GET", .bytes(Array(key.utf8) + [0, 7])) == .bulk(withNul))
        var big = [UInt8](repeating: 0, count: 1 << 20)
        for index in big.indices { big[index] = UInt8(truncatingIfNeeded: index &* 31 &+ 7) }
        _ = try await redis.send("SET", .string(key), .bytes(big))
        #expect(try await redis.send("GET", .string(key)) == .bulk(big))
        #expect(try await redis.send("STRLEN", .string(key)) == .integer(1 << 20))
        _ = try await redis.send("DEL", .string(key), .bytes(Array(key.utf8) + [0, 7]))
    }

    @Test("20,000 calls from 200 concurrent tasks each get their own reply")
    func concurrentCallers() async throws {
        let redis = try await TestEnvironment.redisClient()
        let prefix = TestEnvironment.uniqueId("conc")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<200 {
                group.addTask {
                    let key = RedisArgument.string("\(prefix):\(task)")
                    for expected in 1...100 {
                        let value = try await redis.send("INCR", key)
                        guard value == .integer(Int64(expected)) else {
                            throw TestFailure("task \(task) expected \(expected), got \(value)")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        for task in stride(from: 0, to: 200, by: 37) {
            #expect(try await redis.send("GET", .string("\(prefix):\(task)")).int == 100)
        }
        _ = try await redis.send(["DEL"] + (0..<200).map { .string("\(prefix):\($0)") })
    }

    @Test("commands sent together leave as one pipelined batch and keep their order")
    func pipelineBatch() async throws {
        let redis = try await TestEnvironment.redisClient()
        let key = RedisArgument.string(TestEnvironment.uniqueId("pipe"))
        let results = try await redis.pipeline((0..<1000).map { _ in ["INCR", key] })
        #expect(results.map { try? $0.get() } == (1...1000).map { RedisValue.integer(Int64($0)) })
        _ = try await redis.send("DEL", key)
    }

    @Test("a batch delay holds the batch: a call made a moment after the first leaves with it")
    func batchDelay() async throws {
        var configuration = try RedisConfiguration(url: TestEnvironment.redisURL())
        configuration.batchDelay = .seconds(2)
        let redis = RedisClient(configuration: configuration, eventLoopGroup: TestEnvironment.eventLoopGroup)
        let loop = (TestEnvironment.eventLoopGroup as any EventLoopGroup).next()
        _ = try await redis.send(["PING"], on: loop).get()
        let (batches, commands) = (redis.batchesWritten, redis.commandsSent)
        let key = RedisArgument.string(TestEnvironment.uniqueId("delay"))
        // Both calls are made on the connection's own loop, the second 1 ms after the first; the
        // batch is due 2 s after the first, and a loop runs its tasks in deadline order, so the
        // second call is queued before the batch leaves however slow the machine is.
        let (first, second) = try await loop.flatSubmit {
            let first = redis.send(["INCR", key], on: loop)
            let second = loop.scheduleTask(in: .milliseconds(1)) { redis.send(["INCR", key], on: loop) }.futureResult.flatMap { $0 }
            return first.and(second)
        }.get()
        #expect(first == .integer(1) && second == .integer(2))
        #expect(redis.batchesWritten - batches == 1, "one batch for both calls")
        #expect(redis.commandsSent - commands == 2)
        _ = try await redis.send(["DEL", key], on: loop).get()
        await redis.shutdown()
    }

    @Test("SCRIPT FLUSH then EVALSHA goes through NOSCRIPT exactly once")
    func noscriptPath() async throws {
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        let redis = RedisClient(configuration: try RedisConfiguration(url: server.url), eventLoopGroup: TestEnvironment.eventLoopGroup)
        defer { Task { await redis.shutdown() } }
        let script = RedisScript(name: "count", source: "return redis.call('INCR', KEYS[1])")
        try await redis.load([script])
        #expect(try await redis.evalSHA(script, keys: ["counter"], arguments: []) == .integer(1))
        #expect(redis.scriptLoadCount == 0)
        _ = try await redis.send("SCRIPT", "FLUSH")
        #expect(try await redis.evalSHA(script, keys: ["counter"], arguments: []) == .integer(2))
        #expect(redis.scriptLoadCount == 1)
        #expect(try await redis.send("GET", "counter").int == 2, "the script ran once per call, never twice")
        // The callback form (the reserve path's): the reply on the caller's loop, NOSCRIPT
        // recovered the same way.
        let loop = (TestEnvironment.eventLoopGroup as any EventLoopGroup).next()
        func callback() async -> (RedisValue?, Bool) {
            await withCheckedContinuation { continuation in
                redis.evalSHA(script, keys: ["counter"], arguments: [], on: loop) { result in
                    continuation.resume(returning: (try? result.get(), loop.inEventLoop))
                }
            }
        }
        let (first, onLoop) = await callback()
        #expect(first == .integer(3) && onLoop)
        _ = try await redis.send("SCRIPT", "FLUSH")
        #expect(await callback().0 == .integer(4))
        #expect(redis.scriptLoadCount == 2)
        #expect(try await redis.send("GET", "counter").int == 4)
        server.stop()
    }

    @Test("the same client works again after its Redis restarts")
    func reconnectsAfterRestart() async throws {
        let server = try RedisServerProcess()
        try await server.start()
        var configuration = try RedisConfiguration(url: server.url)
        // Generous: a refused connect (server down) fails at once anyway; this only must not
        // time out a connect to a live server on a loaded machine.
        configuration.connectTimeout = .seconds(30)
        let redis = RedisClient(configuration: configuration, eventLoopGroup: TestEnvironment.eventLoopGroup)
        defer { Task { await redis.shutdown() } }
        _ = try await redis.send("SET", "k", "before")
        server.stop()
        do {
            _ = try await redis.send("GET", "k")
            Issue.record("a call with Redis down must fail")
        } catch let error as RedisError {
            #expect(
                error == .connectionClosed
                    || {
                        if case .connectFailed = error { return true } else { return false }
                    }())
        }
        try await server.start()
        let recovered = try await eventually(interval: .milliseconds(100)) {
            (try? await redis.send("GET", "k")) == .bulk(Array("before".utf8))
        }
        #expect(recovered, "AOF kept the value and the client reconnected without a restart")
        server.stop()
    }

    @Test("a wrong port fails fast with a clear error")
    func wrongPort() async throws {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: try freePort())
        configuration.connectTimeout = .milliseconds(500)
        let redis = RedisClient(configuration: configuration, eventLoopGroup: TestEnvironment.eventLoopGroup)
        let started = ContinuousClock.now
        do {
            _ = try await redis.send("PING")
            Issue.record("expected a connection failure")
        } catch let error as RedisError {
            guard case .connectFailed(_, let port, _) = error else {
                Issue.record("got \(error)")
                return
            }
            #expect(port == configuration.port)
            #expect("\(error)".contains("cannot connect to redis"))
        }
        #expect(
            ContinuousClock.now - started < .seconds(300), "bounded, not a hang (a CI run with hogs took 35 s for both, in the suites' first minute)")
        await redis.shutdown()
    }

    @Test("an unreachable host fails within the connect timeout, not a hang")
    func unreachableHost() async throws {
        // 192.0.2.0/24 is TEST-NET-1: never routed, so the connect can only time out.
        var configuration = RedisConfiguration(host: "192.0.2.1", port: 6379)
        configuration.connectTimeout = .milliseconds(300)
        let redis = RedisClient(configuration: configuration, eventLoopGroup: TestEnvironment.eventLoopGroup)
        let started = ContinuousClock.now
        await #expect(throws: RedisError.self) { try await redis.send("PING") }
        #expect(
            ContinuousClock.now - started < .seconds(300), "bounded, not a hang (a CI run with hogs took 35 s for both, in the suites' first minute)")
        await redis.shutdown()
    }

    @Test("the database number in REDIS_URL is selected before any command")
    func selectsDatabase() async throws {
        let base = try TestEnvironment.redisURL()
        let db3 = RedisClient(configuration: try RedisConfiguration(url: base + "/3"), eventLoopGroup: TestEnvironment.eventLoopGroup)
        let db0 = try await TestEnvironment.redisClient()
        let key = RedisArgument.string(TestEnvironment.uniqueId("db"))
        _ = try await db3.send("SET", key, "three")
        #expect(try await db0.send("EXISTS", key) == .integer(0))
        #expect(try await db3.send("GET", key).string == "three")
        _ = try await db3.send("DEL", key)
        await db3.shutdown()
    }

    @Test(
        "REDIS_URL parsing",
        arguments: [
            ("redis://127.0.0.1:6379", "127.0.0.1", 6379, nil as String?, 0),
            ("redis://:s3cr%40t@cache.local:6380/2", "cache.local", 6380, "s3cr@t", 2),
            ("redis://localhost", "localhost", 6379, nil, 0),
            ("redis://10.0.0.1:7000,redis://10.0.0.2:7000", "10.0.0.1", 7000, nil, 0),
        ])
    func urlParsing(url: String, host: String, port: Int, password: String?, database: Int) throws {
        let configuration = try RedisConfiguration(url: url)
        #expect(configuration.host == host)
        #expect(configuration.port == port)
        #expect(configuration.password == password)
        #expect(configuration.database == database)
    }

    @Test("bad REDIS_URLs are refused", arguments: ["http://x", "redis://h:99999", "redis://h:1/x"])
    func badURLs(url: String) {
        #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
    }

    @Test("a password is never part of an error description")
    func passwordNotLeaked() async throws {
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        let redis = RedisClient(
            configuration: try RedisConfiguration(url: "redis://:hunter2-secret@127.0.0.1:\(server.port)"),
            eventLoopGroup: TestEnvironment.eventLoopGroup)
        do {
            _ = try await redis.send("PING")
            Issue.record("AUTH against a server without a password must fail")
        } catch {
            #expect(!"\(error)".contains("hunter2"))
        }
        await redis.shutdown()
        server.stop()
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite("Test environment")
struct TestEnvironmentTests {
    @Test("under CI=true a missing service variable is an error naming it, never a skip")
    func missingVariableUnderCI() throws {
        do {
            _ = try TestEnvironment.variable("REDIS_URL", default: "redis://x", environment: ["CI": "true"])
            Issue.record("expected an error")
        } catch let error as TestEnvironment.Missing {
            #expect(error.variable == "REDIS_URL")
            #expect("\(error)".contains("REDIS_URL"))
        }
        #expect(try TestEnvironment.variable("DATABASE_URL", default: "fallback", environment: [:]) == "fallback")
        #expect(try TestEnvironment.variable("DATABASE_URL", default: "x", environment: ["CI": "true", "DATABASE_URL": "set"]) == "set")
    }
}
