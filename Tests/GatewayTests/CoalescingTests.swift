import NIOCore
import NIOHTTP1
import RedisClient
import ReservationCore
import ReservationScripts
import TestSupport
import Testing

@testable import GatewayCore

/// Coalesced reservations (issue 23): one event loop's reserve calls for one basket go to Redis
/// as one script call that decides each in arrival order, and that call must answer and store
/// exactly what the same requests one by one would have.
@Suite("Coalesced reservations")
struct CoalescingTests {
    /// Distinct consumers asking one unit each of a basket of `stock`: in arrival order, the
    /// first `stock` are granted (each leaving one unit fewer), the rest sold out.
    static func expectArrivalOrder(_ outcomes: [ReserveCall.Outcome], stock: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        for (index, outcome) in outcomes.enumerated() {
            if index < stock {
                guard case .granted(_, _, let remaining) = outcome else {
                    Issue.record("request \(index): \(outcome)", sourceLocation: sourceLocation)
                    continue
                }
                #expect(remaining == stock - 1 - index, "request \(index)", sourceLocation: sourceLocation)
            } else {
                #expect(outcome == .soldOut, "request \(index)", sourceLocation: sourceLocation)
            }
        }
    }

    @Test("random mixes of requests: one coalesced call answers and stores exactly what the same requests one by one do, now and before coalescing")
    func equivalence() async throws {
        // A Redis of its own: the partition marker and the lost set a round sets are its alone.
        let server = try RedisServerProcess(appendOnly: false)
        try await server.start()
        defer { server.stop() }
        let redis = RedisClient(configuration: try RedisConfiguration(url: server.url), eventLoopGroup: TestEnvironment.eventLoopGroup)
        try await redis.load(ReservationScripts.all + [ReserveEquivalence.beforeScript])
        var kinds: Set<String> = []
        var requests = 0
        for partition in [3, 11] {
            let report = try await ReserveEquivalence(partition: partition, direct: redis).run(rounds: 120, seed: 0x5EED_0023 &+ UInt64(partition))
            for difference in report.differences.prefix(20) { Issue.record("\(difference)") }
            #expect(report.differences.count == 0)
            kinds.formUnion(report.kinds)
            requests += report.requests
        }
        #expect(
            kinds.isSuperset(of: ReserveEquivalence.expectedKinds), "never produced: \(ReserveEquivalence.expectedKinds.subtracting(kinds).sorted())")
        #expect(!kinds.contains("error"))
        #expect(requests > 2_000)
    }

    /// Reserves `requests` (basket, consumer) in one turn of `loop`, in order; their outcomes in that order.
    static func reserveInOneTurn(
        _ gateway: GatewayHarness, _ requests: [(String, String)], on loop: any EventLoop
    ) async throws -> [ReserveCall.Outcome] {
        let futures = try await loop.submit {
            requests.map { basketId, consumer in
                gateway.service.reserve(
                    ReservationService.ReserveRequest(
                        basketId: basketId, asked: ReservationRequest(consumerId: consumer, quantity: 1), idempotencyKey: nil), on: loop)
            }
        }.get()
        var outcomes: [ReserveCall.Outcome] = []
        for future in futures { outcomes.append(try await future.get()) }
        return outcomes
    }

    @Test(
        "requests of one basket in one turn of a loop are one call, decided in arrival order; other baskets are calls of their own; a call holds at most 64"
    )
    func coalescesPerLoopTurn() async throws {
        let gateway = try await GatewayHarness.start(expiryLoop: false)
        let loop = gateway.redis.eventLoopGroup.next()
        let hot = TestEnvironment.uniqueId("hot")
        let other = TestEnvironment.uniqueId("other")
        _ = try await gateway.createBasket(hot, stock: 5, maxPerConsumer: 1)
        _ = try await gateway.createBasket(other, stock: 100, maxPerConsumer: 1)
        let before = gateway.service.reserveCoalescing

        // 20 for the hot basket and 3 for another, interleaved, in one turn: two calls
        var requests: [(String, String)] = (0..<20).map { (hot, "c\($0)") }
        requests.insert((other, "o0"), at: 3)
        requests.insert((other, "o1"), at: 10)
        requests.insert((other, "o2"), at: 22)
        let outcomes = try await Self.reserveInOneTurn(gateway, requests, on: loop)
        let afterFirst = gateway.service.reserveCoalescing
        #expect(afterFirst.calls - before.calls == 2)
        #expect(afterFirst.requests - before.requests == 23)
        var hotOutcomes: [ReserveCall.Outcome] = []
        for (request, outcome) in zip(requests, outcomes) {
            if request.0 == other {
                guard case .granted = outcome else {
                    Issue.record("the other basket's \(request.1): \(outcome)")
                    continue
                }
            } else {
                hotOutcomes.append(outcome)
            }
        }
        // arrival order: the first five of the hot basket's requests get its five units
        Self.expectArrivalOrder(hotOutcomes, stock: 5)

        // 70 in one turn: a full call of 64 leaves at once, the other 6 at the end of the turn
        let big = TestEnvironment.uniqueId("big")
        _ = try await gateway.createBasket(big, stock: 66, maxPerConsumer: 1)
        let many = try await Self.reserveInOneTurn(gateway, (0..<70).map { (big, "m\($0)") }, on: loop)
        let afterMany = gateway.service.reserveCoalescing
        #expect(afterMany.calls - afterFirst.calls == 2)
        #expect(afterMany.requests - afterFirst.requests == 70)
        Self.expectArrivalOrder(many, stock: 66)

        // a lone request is a call of its own, answered without company
        let lone = try await Self.reserveInOneTurn(gateway, [(other, "lone")], on: loop)
        guard case .granted = lone.first else {
            Issue.record("the lone request: \(lone)")
            return
        }
        let afterLone = gateway.service.reserveCoalescing
        #expect(afterLone.calls - afterMany.calls == 1 && afterLone.requests - afterMany.requests == 1)
        let view = try await gateway.request(.GET, "/v1/baskets/\(big)")
        #expect(view.json?["stock"]?.int == 0 && view.json?["pending"]?.int == 66)
        await gateway.stop()
    }

    @Test("a basket whose call of 64 left goes behind the groups opened meanwhile: its next 64 do not overtake another basket's earlier request")
    func aFullGroupDoesNotKeepItsPlace() async throws {
        let gateway = try await GatewayHarness.start(expiryLoop: false)
        let loop = gateway.redis.eventLoopGroup.next()
        // both baskets in one partition, so the order of their calls is the order of their
        // events in one stream
        let hot = TestEnvironment.uniqueId("hot")
        var other = TestEnvironment.uniqueId("other")
        while Keyspace.partition(ofBasket: other) != Keyspace.partition(ofBasket: hot) { other = TestEnvironment.uniqueId("other") }
        _ = try await gateway.createBasket(hot, stock: 200, maxPerConsumer: 1)
        _ = try await gateway.createBasket(other, stock: 10, maxPerConsumer: 1)

        // in one turn: one for the hot basket, one for the other, then 128 for the hot one. The
        // hot basket's first 64 leave when full, alone; its next 64 fill a group opened after
        // the other basket's, so they leave behind it; the last one at the end of the turn.
        var requests: [(String, String)] = [(hot, "h0"), (other, "o0")]
        requests += (1...128).map { (hot, "h\($0)") }
        let outcomes = try await Self.reserveInOneTurn(gateway, requests, on: loop)
        for (request, outcome) in zip(requests, outcomes) {
            guard case .granted = outcome else {
                Issue.record("\(request.1): \(outcome)")
                continue
            }
        }
        let order = try await ConcurrencyTests.events(gateway, ofBaskets: [hot, other]).filter { $0["type"] == "reserved" }.map {
            $0["basket"] == hot ? "h" : "o"
        }
        let expected = Array(repeating: "h", count: 64) + ["o"] + Array(repeating: "h", count: 65)
        #expect(order == expected, "the other basket's grant is event \(order.firstIndex(of: "o").map(String.init) ?? "none") of \(order.count)")
        await gateway.stop()
    }

    @Test("on a Redis Cluster: the same equivalence on partitions of two primaries, and the gateway's coalesced calls route to the basket's slot")
    func cluster() async throws {
        let cluster = try RedisClusterProcess()
        try await cluster.start()
        defer { cluster.stop() }
        var kinds: Set<String> = []
        var owners: Set<Int> = []
        for partition in [2, 9, 14] {
            let owner = try #require(try await cluster.owner(ofSlot: RedisHashSlot.slot(of: Keyspace.prefix(partition))))
            owners.insert(owner.port)
            let direct = RedisClient(
                configuration: try RedisConfiguration(url: "redis://127.0.0.1:\(owner.port)"), eventLoopGroup: TestEnvironment.eventLoopGroup)
            try await direct.load(ReservationScripts.all + [ReserveEquivalence.beforeScript])
            let report = try await ReserveEquivalence(partition: partition, direct: direct).run(rounds: 60, seed: 0xC105 &+ UInt64(partition))
            for difference in report.differences.prefix(20) { Issue.record("\(difference)") }
            #expect(report.differences.count == 0)
            kinds.formUnion(report.kinds)
        }
        #expect(owners.count >= 2, "the partitions are on more than one primary")
        #expect(
            kinds.isSuperset(of: ReserveEquivalence.expectedKinds), "never produced: \(ReserveEquivalence.expectedKinds.subtracting(kinds).sorted())")

        // through the gateway's cluster client: 30 requests of one basket in one turn, one call
        let gateway = try await GatewayHarness.start(redisURL: cluster.url, expiryLoop: false)
        let loop = gateway.redis.eventLoopGroup.next()
        let basketId = TestEnvironment.uniqueId("cluster-hot")
        _ = try await gateway.createBasket(basketId, stock: 10, maxPerConsumer: 1)
        let before = gateway.service.reserveCoalescing
        let outcomes = try await Self.reserveInOneTurn(gateway, (0..<30).map { (basketId, "c\($0)") }, on: loop)
        let after = gateway.service.reserveCoalescing
        #expect(after.calls - before.calls == 1 && after.requests - before.requests == 30)
        Self.expectArrivalOrder(outcomes, stock: 10)
        await gateway.stop()
    }

    @Test("a reservation leaves in the same Redis batch as the other commands of its turn of the loop (no batch later), also a lone one")
    func sameBatchAsItsTurn() async throws {
        let gateway = try await GatewayHarness.start(expiryLoop: false)
        let loop = gateway.redis.eventLoopGroup.next()
        let basketId = TestEnvironment.uniqueId("turn")
        _ = try await gateway.createBasket(basketId, stock: 10, maxPerConsumer: 1)
        // the loop's connection is open and idle
        _ = try await gateway.redis.send(["PING"], on: loop).get()
        for round in 0..<3 {
            let before = (gateway.redis.batchesWritten, gateway.redis.commandsSent)
            // another command first (its batch is due later in this turn), then the reservation
            let (ping, reservation) = try await loop.submit {
                let ping = gateway.redis.send(["PING"], on: loop)
                let reservation = gateway.service.reserve(
                    ReservationService.ReserveRequest(
                        basketId: basketId, asked: ReservationRequest(consumerId: "c\(round)", quantity: 1), idempotencyKey: nil), on: loop)
                return (ping, reservation)
            }.get()
            #expect(try await ping.get().string == "PONG")
            guard case .granted = try await reservation.get() else {
                Issue.record("round \(round): not granted")
                continue
            }
            #expect(gateway.redis.batchesWritten - before.0 == 1, "one batch for the PING and the reservation")
            #expect(gateway.redis.commandsSent - before.1 == 2)
        }
        await gateway.stop()
    }
}
