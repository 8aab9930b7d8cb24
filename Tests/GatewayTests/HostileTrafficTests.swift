import Foundation
import GatewayCore
import NIOCore
import NIOHTTP1
import RedisClient
import ReservationCore
import Synchronization
import TestSupport
import Testing

/// The real `gateway` executable against input nobody should send, and against a stop under
/// load: the process lives, answers what it can, and never answers a 5xx other than 503.
@Suite("Gateway under hostile traffic")
struct HostileTrafficTests {
    static func request(_ method: String, _ target: String, headers: [String] = [], body: String = "") -> [UInt8] {
        var text = "\(method) \(target) HTTP/1.1\r\nHost: t\r\n"
        for header in headers { text += header + "\r\n" }
        if !body.isEmpty || method == "POST" || method == "PUT" { text += "Content-Length: \(body.utf8.count)\r\n" }
        return Array((text + "Connection: close\r\n\r\n" + body).utf8)
    }

    /// Requests that are wrong in every way the gateway must survive.
    static func hostileCases(basketId: String, reservationId: String) -> [[UInt8]] {
        let admin = "Authorization: Bearer \(GatewayProcess.adminToken)"
        let mac = String(repeating: "ab", count: 32)
        var cases: [[UInt8]] = [
            Array("GARBAGE\r\n\r\n".utf8), Array("\r\n\r\n\r\n".utf8), Array([0, 0, 0, 0, 13, 10, 13, 10]),
            Array("GET / HTTP/9.9\r\n\r\n".utf8), Array("GET\r\n\r\n".utf8), Array(" / HTTP/1.1\r\n\r\n".utf8),
            Array("GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n".utf8),
            Array("GET /healthz HTTP/1.1\r\nHost: t\r\n: empty-name\r\n\r\n".utf8),
            Array("POST /v1/baskets/b/reservations HTTP/1.1\r\nContent-Length: -5\r\n\r\n".utf8),
            Array("POST /v1/baskets/b/reservations HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n".utf8),
            Array("POST /v1/baskets/b/reservations HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".utf8),
            Array("POST /v1/baskets/b/reservations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbroken\r\n0\r\n\r\n".utf8),
            Array("POST /v1/baskets/b/reservations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n".utf8),
            Array("POST /v1/baskets/b/reservations HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n".utf8),
            request("GET", "/v1/baskets/" + String(repeating: "x", count: 129)),
            request("GET", "/v1/baskets/%00%ff%fe"), request("GET", "/v1/reservations/%"), request("DELETE", "/v1/reservations/00-"),
            request("GET", "/v1/reservations/99-aaaaaaaaaaaaaaaaaaaaaaaaaa"), request("GET", "/../../etc/passwd"),
            request("GET", "/v1/baskets/\(basketId)?" + String(repeating: "&a=1", count: 200)),
            request("POST", "/v1/baskets/\(basketId)/reservations", body: "{" + String(repeating: "[", count: 5_000)),
            request(
                "POST", "/v1/baskets/\(basketId)/reservations", body: String(repeating: "[", count: 8_000) + String(repeating: "]", count: 8_000)),
            request("POST", "/v1/baskets/\(basketId)/reservations", body: #"{"consumerId":"c","quantity":1e400}"#),
            request("POST", "/v1/baskets/\(basketId)/reservations", body: #"{"consumerId":"c","quantity":9223372036854775808}"#),
            request("POST", "/v1/baskets/\(basketId)/reservations", body: #"{"consumerId":"c","quantity":-9223372036854775808}"#),
            request("POST", "/v1/baskets/\(basketId)/reservations", body: #"{"consumerId":"c","quantity":1.5}"#),
            request("POST", "/v1/baskets/\(basketId)/reservations", body: #"{"consumerId":"\u0000","quantity":1}"#),
            request("POST", "/v1/baskets/\(basketId)/reservations", body: #"{"consumerId":"\ud800"}"#),
            request("POST", "/v1/baskets/\(basketId)/reservations", body: "{\"consumerId\":\"\u{7f}\"}"),
            request(
                "POST", "/v1/baskets/\(basketId)/reservations", headers: ["Idempotency-Key: " + String(repeating: "k", count: 300)],
                body: #"{"consumerId":"c"}"#),
            request("POST", "/v1/baskets/\(basketId)/reservations", headers: ["Idempotency-Key: \u{1}"], body: #"{"consumerId":"c"}"#),
            request("PUT", "/v1/baskets/\(basketId)-x", headers: [admin], body: #"{"stock":1e9,"holdSeconds":86400,"maxPerConsumer":1e9}"#),
            request("PUT", "/v1/baskets/\(basketId)-y", headers: [admin], body: #"{"stock":-0.0}"#),
            request("POST", "/v1/baskets/\(basketId)/stock-adjustments", headers: [admin], body: #"{"delta":-9223372036854775808}"#),
            request("POST", "/v1/baskets/\(basketId)/stock-adjustments", headers: [admin], body: #"{"delta":1000000000}"#),
            request("POST", "/v1/baskets/\(basketId)/stock-adjustments", headers: ["Authorization: Bearer"], body: #"{"delta":1}"#),
            request(
                "POST", "/v1/baskets/\(basketId)/stock-adjustments", headers: ["Authorization: " + String(repeating: "B", count: 8000)],
                body: #"{"delta":1}"#),
            request("DELETE", "/v1/reservations/\(reservationId)x"),
        ]
        let payment =
            #"{"id":"e1","type":"payment.succeeded","data":{"reservationId":"\#(reservationId)","paymentId":"p","amountCents":1,"currency":"EUR"}}"#
        for signature in [
            "t=-9223372036854775808,v1=\(mac)", "t=9223372036854775807,v1=\(mac)", "t=99999999999999999999999,v1=\(mac)",
            "t=,v1=", "v1=\(mac)", "t=1", String(repeating: ",", count: 1000), "t=1,v1=" + String(repeating: "z", count: 64),
            "t=0x10,v1=\(mac)", "t=+1,v1=\(mac)", "t=" + String(repeating: "9", count: 900),
        ] {
            cases.append(request("POST", "/v1/webhooks/payments", headers: ["Webhook-Signature: \(signature)"], body: payment))
        }
        return cases
    }

    /// `valid` with a few random bytes flipped, inserted, dropped or repeated.
    static func mutate(_ valid: [UInt8], _ random: inout SeededGenerator) -> [UInt8] {
        var bytes = valid
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            guard !bytes.isEmpty else { break }
            let index = Int.random(in: 0..<bytes.count, using: &random)
            switch Int.random(in: 0..<5, using: &random) {
            case 0: bytes[index] = UInt8.random(in: 0...255, using: &random)
            case 1: bytes.insert(UInt8.random(in: 0...255, using: &random), at: index)
            case 2: bytes.remove(at: index)
            case 3: bytes.insert(contentsOf: bytes[index..<min(bytes.count, index + Int.random(in: 1...64, using: &random))], at: index)
            default: bytes = Array(bytes[..<index])
            }
        }
        return bytes
    }

    @Test("a few thousand malformed and hostile requests: the gateway lives, and nothing but 503 is a 5xx")
    func hostileRequests() async throws {
        let redis = try await TestEnvironment.redisClient()
        await redis.shutdown()
        // Short timeouts: a case cut short is closed in half a second, not ten.
        let gateway = try await GatewayProcess.start(
            redisURL: try TestEnvironment.redisURL(),
            environment: ["GATEWAY_REQUEST_TIMEOUT_MS": "1000", "GATEWAY_IDLE_TIMEOUT_MS": "2000"])
        let basketId = TestEnvironment.uniqueId("hostile")
        // Setup calls are retried: on a loaded machine the short idle timeout may close a
        // connection before its request arrives (that is the timeout working, not a failure).
        #expect(
            try await gateway.requestRetrying(
                .PUT, "/v1/baskets/\(basketId)", headers: gateway.admin,
                body: Array(#"{"stock":100000,"maxPerConsumer":1000}"#.utf8)
            ).status == 201)
        let reserved = try await gateway.requestRetrying(.POST, "/v1/baskets/\(basketId)/reservations", body: Array(#"{"consumerId":"victim"}"#.utf8))
        let reservationId = try #require(reserved.json?["reservationId"]?.stringValue)

        var random = SeededGenerator(state: 20_261_125)
        var cases = Self.hostileCases(basketId: basketId, reservationId: reservationId)
        let valid: [[UInt8]] = [
            Self.request(
                "POST", "/v1/baskets/\(basketId)/reservations", headers: ["Idempotency-Key: k1"], body: #"{"consumerId":"mutant","quantity":1}"#),
            Self.request("GET", "/v1/reservations/\(reservationId)"), Self.request("GET", "/v1/baskets/\(basketId)"),
            Self.request(
                "POST", "/v1/baskets/\(basketId)/stock-adjustments", headers: ["Authorization: Bearer \(GatewayProcess.adminToken)"],
                body: #"{"delta":1}"#),
            Self.request(
                "POST", "/v1/webhooks/payments", headers: ["Webhook-Signature: t=1,v1=\(String(repeating: "0", count: 64))"],
                body: #"{"id":"e","type":"payment.failed","data":{"reservationId":"r","paymentId":"p","amountCents":1,"currency":"EUR"}}"#),
        ]
        while cases.count < 3_000 { cases.append(Self.mutate(valid[cases.count % valid.count], &random)) }

        var statuses: [Int: Int] = [:]
        var bad: [String] = []
        for start in stride(from: 0, to: cases.count, by: 100) {
            let batch = Array(cases[start..<min(start + 100, cases.count)])
            let answers = try await withThrowingTaskGroup(of: (Int, [Int]).self) { group in
                for (offset, bytes) in batch.enumerated() {
                    group.addTask {
                        let connection = try await RawConnection.open(port: gateway.port)
                        await connection.send(bytes)
                        // Every case ends its head, or is cut short: the server answers or closes,
                        // and a half-sent one is closed by its request timeout.
                        _ = try await connection.waitClosed()
                        let found = connection.statuses
                        await connection.close()
                        return (start + offset, found)
                    }
                }
                return try await group.reduce(into: [(Int, [Int])]()) { $0.append($1) }
            }
            for (index, found) in answers {
                for status in found {
                    statuses[status, default: 0] += 1
                    if status >= 500 && status != 503 {
                        bad.append("case \(index): \(status): \(String(decoding: cases[index].prefix(200), as: UTF8.self))")
                    }
                }
            }
            #expect(gateway.isRunning, "the gateway died at cases \(start)..<\(start + 100)")
            guard gateway.isRunning else { break }
        }
        #expect(bad.isEmpty, "\(bad.prefix(10))")
        #expect(gateway.isRunning)
        #expect(try await gateway.requestRetrying(.GET, "/healthz").status == 200)
        #expect((statuses[400] ?? 0) > 100, "\(statuses)")
        #expect(try await gateway.terminate() == 0)
    }

    /// Resident and peak resident memory of a process, in bytes (`/proc/<pid>/status`).
    static func memory(of pid: pid_t) throws -> (resident: Int, peak: Int) {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        func kilobytes(_ name: String) -> Int {
            let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        return (kilobytes("VmRSS"), kilobytes("VmHWM"))
    }

    @Test("1,000 connections write 1 MiB of pipelined requests each and never read: bounded memory, /healthz answers, they are closed")
    func floodWithoutReading() async throws {
        let requestTimeout = 3_000
        // A Redis of its own: the flood sends it hundreds of thousands of reads.
        let redisServer = try RedisServerProcess(appendOnly: false)
        try await redisServer.start()
        let gateway = try await GatewayProcess.start(
            redisURL: redisServer.url,
            environment: ["GATEWAY_REQUEST_TIMEOUT_MS": String(requestTimeout), "GATEWAY_IDLE_TIMEOUT_MS": "3600000"])
        // Warm: the memory a served request needs is there before the baseline is taken.
        for _ in 0..<20 { _ = try await gateway.request(.GET, "/v1/baskets/x") }
        let before = try Self.memory(of: gateway.process.pid)
        var flood = ByteBuffer()
        while flood.readableBytes < 1 << 20 { flood.writeString("GET /v1/baskets/x HTTP/1.1\r\nHost: t\r\n\r\n") }

        // A fresh connection's /healthz, four times a second throughout.
        let probes = ProbeLog()
        let probing = Task {
            while !Task.isCancelled {
                let started = ContinuousClock.now
                let status = (try? await gateway.request(.GET, "/healthz"))?.status
                probes.append(status: status, took: ContinuousClock.now - started)
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        var connections: [RawConnection] = []
        for _ in 0..<1_000 {
            let connection = try await RawConnection.open(port: gateway.port, neverRead: true)
            connection.sendWithoutWaiting(flood)
            connections.append(connection)
        }
        let opened = ContinuousClock.now
        // The gateway closes every one: their answers stay over the high-water mark for the
        // request timeout. (The bound only catches a hang; the counter below says why they closed.)
        let allClosed = try await eventually(timeout: .seconds(600), interval: .milliseconds(100)) {
            connections.allSatisfy { !$0.isActive }
        }
        let closedAfter = ContinuousClock.now - opened
        probing.cancel()
        _ = await probing.value
        let after = try Self.memory(of: gateway.process.pid)
        #expect(allClosed, "\(connections.filter(\.isActive).count) flooding connections still open")
        #expect(gateway.isRunning)
        let growth = after.peak - before.resident
        #expect(growth <= 1_000 * 256 * 1024, "peak RSS grew by \(growth / 1024) KiB for 1,000 connections")
        let metrics = try await gateway.request(.GET, "/metrics").text
        let timedOut =
            metrics.split(separator: "\n").first { $0.hasPrefix("gateway_connections_timed_out_total ") }
            .flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        #expect(timedOut >= 1_000, "closed as slow clients: \(timedOut)")
        let all = probes.all
        #expect(all.count >= 2, "probed throughout")
        #expect(all.allSatisfy { $0.status == 200 }, "\(all.map(\.status))")
        // A fresh connection is answered at once throughout (the build under test is a debug build
        // on a loaded machine: the median carries the claim, the maximum only catches a stall;
        // the release build's figures are in the README).
        let latencies = all.map(\.took).sorted()
        let slowest = latencies.last ?? .zero
        let median = latencies.isEmpty ? .zero : latencies[latencies.count / 2]
        // Bounds far above a healthy answer (milliseconds) and far below a stall (the flood holds
        // its connections for the request timeout): a CI machine with CPU hogs measured a 1.3 s
        // median once.
        #expect(median < .seconds(5), "median /healthz during the flood: \(median)")
        #expect(slowest < .seconds(30), "slowest /healthz during the flood: \(slowest)")
        print(
            "flood: RSS \(before.resident / 1024) KiB before, peak \(after.peak / 1024) KiB; all closed after \(closedAfter); \(all.count) probes, median \(median), slowest \(slowest)"
        )
        for connection in connections { await connection.close() }
        #expect(try await gateway.terminate() == 0)
        redisServer.stop()
    }

    @Test("SIGTERM under keep-alive load: drained, not cut: every request written is answered, the last one with Connection: close")
    func stopDrainsKeepAliveConnections() async throws {
        // A drain window far longer than any client needs to send its next request, however
        // loaded the machine: what is tested is that no written request goes unanswered.
        let gateway = try await GatewayProcess.start(
            redisURL: try TestEnvironment.redisURL(), environment: ["GATEWAY_SHUTDOWN_GRACE_MS": "120000", "GATEWAY_DRAIN_MS": "60000"])
        let basketId = TestEnvironment.uniqueId("drain")
        #expect(
            try await gateway.request(
                .PUT, "/v1/baskets/\(basketId)", headers: gateway.admin, body: Array(#"{"stock":1000000,"maxPerConsumer":1}"#.utf8)
            ).status == 201)
        let answered = Answers()
        let unanswered = Counter()
        let endedWithClose = Counter()
        let clients = (0..<32).map { client in
            Task {
                let connection = try await RawConnection.open(port: gateway.port)
                var index = 0
                while true {
                    let consumer = "d\(client)-\(index)"
                    let body = #"{"consumerId":"\#(consumer)"}"#
                    let bytes = Array(
                        "POST /v1/baskets/\(basketId)/reservations HTTP/1.1\r\nHost: t\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
                    guard await connection.send(bytes) else { break }
                    let responses = try await connection.responses(count: index + 1)
                    guard responses.count == index + 1 else {
                        unanswered.increment()
                        break
                    }
                    answered.append(consumer: consumer, status: responses[index].status)
                    if responses[index].header("connection") == "close" {
                        endedWithClose.increment()
                        #expect(try await connection.waitClosed(), "closed after its last answer")
                        break
                    }
                    index += 1
                }
                await connection.close()
            }
        }
        #expect(try await eventually { answered.count >= 300 })
        gateway.process.signal(SIGTERM)
        for client in clients { _ = try? await client.value }
        let status = try await gateway.process.finish(timeout: .seconds(180)).status
        #expect(status == 0)
        #expect(unanswered.value == 0, "requests written in full that got no answer")
        #expect(endedWithClose.value == 32, "every connection's last answer said Connection: close")
        #expect(answered.all.allSatisfy { $0.status == 201 }, "\(Set(answered.all.map(\.status)))")
    }

    @Test("SIGTERM under load: every request received is answered (Connection: close), nothing applied goes unanswered, exit 0")
    func gracefulStopUnderLoad() async throws {
        let redisServer = try RedisServerProcess(appendOnly: false)
        try await redisServer.start()
        // No shedding and no batch timeout while Redis is frozen: otherwise, on a slow machine, the
        // requests stuck in Redis are answered 503 (keep-alive) before the stop reaches them, and
        // nothing is in flight at the stop (a fresh-clone CI run under two CPU hogs did exactly that).
        let gateway = try await GatewayProcess.start(
            redisURL: redisServer.url,
            environment: ["GATEWAY_SHUTDOWN_GRACE_MS": "60000", "REDIS_SHED_AFTER_MS": "600000", "REDIS_COMMAND_TIMEOUT_MS": "600000"])
        let basketId = TestEnvironment.uniqueId("stop")
        #expect(
            try await gateway.request(
                .PUT, "/v1/baskets/\(basketId)", headers: gateway.admin,
                body: Array(#"{"stock":1000000,"maxPerConsumer":1}"#.utf8)
            ).status == 201)
        let answered = Answers()
        let closeMarked = Counter()
        let sent = Counter()
        // 16 keep-alive clients, each sending reservation after reservation with fresh consumer ids.
        let clients = (0..<16).map { client in
            Task {
                let connection = try await RawConnection.open(port: gateway.port)
                var index = 0
                while true {
                    let consumer = "k\(client)-\(index)"
                    let body = #"{"consumerId":"\#(consumer)"}"#
                    let bytes = Array(
                        "POST /v1/baskets/\(basketId)/reservations HTTP/1.1\r\nHost: t\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
                    guard await connection.send(bytes) else { break }
                    sent.increment()
                    let responses = try await connection.responses(count: index + 1)
                    guard responses.count == index + 1 else { break }  // closed without an answer: it was not received
                    let response = responses[index]
                    answered.append(consumer: consumer, status: response.status)
                    if response.header("connection") == "close" {
                        closeMarked.increment()
                        break
                    }
                    index += 1
                }
                await connection.close()
            }
        }
        // Let the load run, then freeze Redis so requests are certainly in flight at the stop.
        #expect(try await eventually { answered.count >= 200 })
        try redisServer.pause()
        _ = try await eventually { sent.value >= answered.count + 16 }
        gateway.process.signal(SIGTERM)
        // Redis goes on only once the stop has begun (the listening socket refuses), so the
        // requests stuck in it are certainly in flight when the stop reaches their connections.
        #expect(
            try await eventually {
                (try? await RawConnection.open(port: gateway.port)) == nil
            })
        // (and the stop's per-connection notices, queued on the event loops, run before the
        // replies can: generous for a loaded machine; a late notice only closes idle connections)
        try await Task.sleep(for: .seconds(1))
        try redisServer.resume()
        let status = try await gateway.process.finish(timeout: .seconds(120)).status
        #expect(status == 0)
        for client in clients { _ = try? await client.value }

        // What Redis applied is exactly what was answered 201.
        let granted = Set(answered.all.filter { $0.status == 201 }.map(\.consumer))
        let redis = RedisClient(configuration: try RedisConfiguration(url: redisServer.url), eventLoopGroup: TestEnvironment.eventLoopGroup)
        let stream = Keyspace.stream(Keyspace.partition(ofBasket: basketId))
        var applied = Set<String>()
        for entry in try await redis.send("XRANGE", .string(stream), "-", "+").array ?? [] {
            let fields = entry.array?.last?.array?.compactMap(\.string) ?? []
            var event: [String: String] = [:]
            for pair in stride(from: 0, to: fields.count - 1, by: 2) { event[fields[pair]] = fields[pair + 1] }
            if event["type"] == "reserved", event["basket"] == basketId, let consumer = event["consumer"] { applied.insert(consumer) }
        }
        #expect(
            applied == granted,
            "applied without a 201: \(applied.subtracting(granted).prefix(5)); 201 not applied: \(granted.subtracting(applied).prefix(5))")
        #expect(closeMarked.value >= 1, "requests in flight at the stop were answered with Connection: close")
        #expect(answered.all.allSatisfy { $0.status == 201 || $0.status == 503 }, "\(Set(answered.all.map(\.status)))")
        await redis.shutdown()
        redisServer.stop()
    }
}

final class Answers: Sendable {
    struct Answer: Sendable {
        var consumer: String
        var status: Int
    }
    private let answers = Mutex<[Answer]>([])
    var all: [Answer] { answers.withLock { $0 } }
    var count: Int { answers.withLock { $0.count } }
    func append(consumer: String, status: Int) { answers.withLock { $0.append(Answer(consumer: consumer, status: status)) } }
}

final class ProbeLog: Sendable {
    struct Probe: Sendable {
        var status: Int?
        var took: Duration
    }
    private let probes = Mutex<[Probe]>([])
    var all: [Probe] { probes.withLock { $0 } }
    func append(status: Int?, took: Duration) { probes.withLock { $0.append(Probe(status: status, took: took)) } }
}
