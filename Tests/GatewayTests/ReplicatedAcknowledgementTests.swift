import Foundation
import NIOCore
import NIOHTTP1
import RedisClient
import ReservationCore
import ReservationScripts
import TestSupport
import Testing

@testable import GatewayCore

/// REDIS_WAIT_REPLICAS on a single Redis with one replica, both the test's own: state changes
/// are answered once the replica holds them; with the replica frozen (it acknowledges nothing)
/// they are 503 with Retry-After, while reads and refusals that changed nothing are answered
/// as usual; once it is back, a retry with the same Idempotency-Key returns the change.
@Suite("Replicated acknowledgements (REDIS_WAIT_REPLICAS) on a single Redis with a replica", .serialized)
struct ReplicatedAcknowledgementTests {
    /// A primary and a replica of it, in sync.
    static func primaryWithReplica() async throws -> (RedisServerProcess, RedisServerProcess) {
        let primary = try RedisServerProcess()
        try await primary.start()
        let replica = try RedisServerProcess(appendOnly: false)
        try await replica.start()
        _ = replica.command("REPLICAOF 127.0.0.1 \(primary.port)")
        let synced = try await eventually {
            replica.command("INFO replication").contains("master_link_status:up")
                && primary.command("INFO replication").contains("connected_slaves:1")
        }
        guard synced else { throw HarnessError("the replica did not sync") }
        return (primary, replica)
    }

    static func metric(_ gateway: GatewayHarness, _ name: String) async throws -> Int {
        let page = try await gateway.request(.GET, "/metrics").text
        let line = page.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
    }

    /// Creates a basket, retrying a 503 (a create whose replica acknowledgement came late was
    /// applied: the retry then finds it, 409).
    static func createRetrying(_ gateway: GatewayHarness, _ basket: String, stock: Int) async throws {
        var answeredUnavailable = false
        let created = try await eventually(interval: .milliseconds(100)) {
            let answer = try await gateway.request(
                .PUT, "/v1/baskets/\(basket)", headers: gateway.admin, body: Array(#"{"stock": \#(stock)}"#.utf8))
            if answer.status == 503 { answeredUnavailable = true }
            return answer.status == 201 || (answer.status == 409 && answeredUnavailable)
        }
        guard created else { throw HarnessError("creating \(basket) never succeeded") }
    }

    @Test(
        "WAIT 1: answered once the replica has it; replica frozen: changes 503 with Retry-After, reads and refusals answered; then the same key returns the change"
    )
    func replicaFrozenAndBack() async throws {
        let (primary, replica) = try await Self.primaryWithReplica()
        let gateway = try await GatewayHarness.start(redisURL: primary.url, expiryLoop: false) { configuration in
            configuration.redisWaitReplicas = 1
            configuration.redisWaitTimeoutMilliseconds = 200
        }
        let basket = TestEnvironment.uniqueId("wait")
        let empty = TestEnvironment.uniqueId("wait-empty")
        // On a loaded machine the healthy replica may still miss the 200 ms now and then: such a
        // change is answered 503 yet applied, and the retry returns it (409 for a create, the
        // same reservation for the same Idempotency-Key), as the contract tells a client to do.
        try await Self.createRetrying(gateway, basket, stock: 10)
        try await Self.createRetrying(gateway, empty, stock: 0)
        let mixed = TestEnvironment.uniqueId("wait-mixed")
        try await Self.createRetrying(gateway, mixed, stock: 5)
        var first: TestHTTPResponse?
        #expect(
            try await eventually(interval: .milliseconds(100)) {
                let answer = try await gateway.reserve(basket, consumer: "alice", idempotencyKey: "k1")
                first = answer
                return answer.status == 201
            })
        let firstId = try #require(first?.json?["reservationId"]?.stringValue)
        #expect(try await Self.metric(gateway, "gateway_redis_waits_total") > 0)
        let timeoutsBeforeFreeze = try await Self.metric(gateway, "gateway_redis_wait_timeouts_total")
        #expect(timeoutsBeforeFreeze >= 0)
        // The replica holds what was answered.
        #expect(replica.command("EXISTS \(Keyspace.reservation(firstId, partition: Keyspace.partition(ofBasket: basket)))").hasPrefix(":1"))

        try replica.pause()
        do {
            let held = try await gateway.reserve(basket, consumer: "bob", idempotencyKey: "k2")
            #expect(held.status == 503 && held.errorCode == "unavailable", "\(held.status) \(held.text)")
            #expect(held.headers.first(name: "Retry-After") != nil)
            let refused = try await gateway.reserve(empty, consumer: "carol", idempotencyKey: "k3")
            #expect(refused.status == 409 && refused.errorCode == "sold_out", "a refusal that changed nothing is answered")
            #expect(try await gateway.request(.GET, "/v1/baskets/\(basket)").status == 200, "reads are answered")
            #expect(try await gateway.request(.GET, "/v1/reservations/\(firstId)").status == 200)
            let cancel = try await gateway.request(.DELETE, "/v1/reservations/\(firstId)")
            #expect(cancel.status == 503, "a cancel is a change: \(cancel.status)")
            let adjust = try await gateway.request(
                .POST, "/v1/baskets/\(basket)/stock-adjustments", headers: gateway.admin, body: Array(#"{"delta": 1}"#.utf8))
            #expect(adjust.status == 503, "a stock change is a change: \(adjust.status)")
            // One coalesced call of a grant and a refusal (dave's second unit, over his limit of
            // one): only the grant fails as not replicated; the refusal is answered.
            let loop = gateway.redis.eventLoopGroup.next()
            let before = gateway.service.reserveCoalescing
            let futures = try await loop.submit {
                ["dave", "dave"].map { consumer in
                    gateway.service.reserve(
                        ReservationService.ReserveRequest(
                            basketId: mixed, asked: ReservationRequest(consumerId: consumer, quantity: 1), idempotencyKey: nil), on: loop)
                }
            }.get()
            var outcomes: [Result<ReserveCall.Outcome, any Error>] = []
            for future in futures {
                do { outcomes.append(.success(try await future.get())) } catch { outcomes.append(.failure(error)) }
            }
            let after = gateway.service.reserveCoalescing
            #expect(after.calls - before.calls == 1 && after.requests - before.requests == 2, "one call of both")
            guard case .failure(let grantError) = outcomes[0], case .success(.limitExceeded) = outcomes[1] else {
                Issue.record("the grant fails, the refusal is answered: \(outcomes)")
                throw HarnessError("mixed call")
            }
            #expect((grantError as? RedisError) == .notReplicated, "\(grantError)")
            #expect(try await Self.metric(gateway, "gateway_redis_wait_timeouts_total") >= timeoutsBeforeFreeze + 3)
        } catch {
            try? replica.resume()
            throw error
        }
        try replica.resume()

        // The same key again: the change made while the replica was frozen, now replicated.
        var replayed: TestHTTPResponse?
        #expect(
            try await eventually(interval: .milliseconds(100)) {
                let answer = try await gateway.reserve(basket, consumer: "bob", idempotencyKey: "k2")
                replayed = answer
                return answer.status == 201
            })
        let bobId = try #require(replayed?.json?["reservationId"]?.stringValue)
        // The cancel made while frozen stands; cancelling again answers it (and waits for the replica).
        var again: TestHTTPResponse?
        #expect(
            try await eventually(interval: .milliseconds(100)) {
                let answer = try await gateway.request(.DELETE, "/v1/reservations/\(firstId)")
                again = answer
                return answer.status != 503
            })
        #expect(again?.status == 200 && again?.json?["status"]?.stringValue == "cancelled", "\(again?.status ?? 0) \(again?.text ?? "")")
        let view = try await gateway.basket(basket)
        // 10 units, +1 from the adjustment made while frozen; alice's cancelled, bob's pending.
        #expect(view["capacity"]?.int == 11 && view["pending"]?.int == 1 && view["stock"]?.int == 10, "\(view)")
        #expect(replica.command("EXISTS \(Keyspace.reservation(bobId, partition: Keyspace.partition(ofBasket: basket)))").hasPrefix(":1"))
        await gateway.stop()
        replica.kill()
        primary.kill()
    }

    @Test("WAIT 0 (the default) sends no WAIT at all")
    func offByDefault() async throws {
        let gateway = try await GatewayHarness.start(expiryLoop: false)
        let basket = TestEnvironment.uniqueId("nowait")
        try await gateway.createBasket(basket, stock: 1)
        #expect(try await gateway.reserve(basket, consumer: "a").status == 201)
        #expect(try await Self.metric(gateway, "gateway_redis_waits_total") == 0)
        #expect(try await Self.metric(gateway, "gateway_redis_held_replies_total") == 0)
        await gateway.stop()
    }
}
