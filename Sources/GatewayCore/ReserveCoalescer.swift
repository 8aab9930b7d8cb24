import NIOCore
import RedisClient
import ReservationScripts
import Synchronization

/// Coalesces reservations: the reserve calls for one basket that an event loop collects for
/// its connection's next Redis batch go to Redis as one script call (`ReserveBatchCall`),
/// which decides them in arrival order exactly as calls of their own would be decided, and
/// answers each. In a flash sale nearly every call of a batch is for the same hot basket, and
/// the script's fixed costs (the call, reading and checking the basket, writing it and its
/// holds) are then paid once per call instead of once per reservation.
///
/// A lone request is not delayed: its group is handed to the connection right before the next
/// batch is formed (`RedisClient.beforeNextBatch`), which is later in this turn of the loop, or
/// after `REDIS_BATCH_DELAY_US` when that is set (requests of the following turns join it
/// meanwhile). While a batch is in flight, each turn's groups queue as calls of their own.
/// Requests on other event loops are other calls: each loop owns its groups, and nothing is
/// shared between loops.
final class ReserveCoalescer: Sendable {
    typealias Completion = @Sendable (Result<ReserveCall.Outcome, any Error>) -> Void

    fileprivate let redis: RedisClient
    private let metrics: GatewayMetrics
    private let loops: [LoopGroups]

    init(redis: RedisClient, metrics: GatewayMetrics) {
        self.redis = redis
        self.metrics = metrics
        self.loops = redis.eventLoopGroup.makeIterator().map(LoopGroups.init)
    }

    /// Script calls sent and the requests they decided (their ratio: reservations per call).
    var counts: (calls: Int, requests: Int) {
        loops.reduce((0, 0)) { sum, loop in
            (sum.0 &+ loop.calls.load(ordering: .relaxed), sum.1 &+ loop.requests.load(ordering: .relaxed))
        }
    }

    /// Decides `call` with the others of its basket this turn of `eventLoop`; `completion` runs
    /// on `eventLoop`. From a thread that is not one of the client's loops it is a call of its own.
    func reserve(_ call: ReserveCall, on eventLoop: any EventLoop, _ completion: @escaping Completion) {
        let loop = loops.first(where: { $0.eventLoop === eventLoop })
        guard let loop, eventLoop.inEventLoop else {
            // (counted all the same: the counters are atomics)
            send([Pending(call: call, completion: completion)], on: eventLoop, counts: loop)
            return
        }
        for group in loop.add(Pending(call: call, completion: completion), coalescer: self) {
            send(group, on: eventLoop, counts: loop)
        }
    }

    struct Pending {
        let call: ReserveCall
        let completion: Completion
    }

    /// One call for `requests` (all of one basket, in arrival order); each gets its own answer.
    /// A failure of the call as a whole (Redis unreachable, a reply of the wrong shape) is every
    /// request's.
    fileprivate func send(_ requests: [Pending], on eventLoop: any EventLoop, counts: LoopGroups?) {
        counts?.calls.wrappingAdd(1, ordering: .relaxed)
        counts?.requests.wrappingAdd(requests.count, ordering: .relaxed)
        let started = NIODeadline.now()
        let metrics = metrics
        // a call of one is sent as it was built (no copy of its keys and arguments), to the
        // straight script of one (reserve_one.lua: the same decisions, without the batch's costs)
        let script: RedisScript
        let keys: [String]
        let arguments: [RedisArgument]
        if requests.count == 1 {
            (script, keys, arguments) = (ReserveCall.script, requests[0].call.keys, requests[0].call.arguments)
        } else {
            let call = ReserveBatchCall(requests.map(\.call))
            (script, keys, arguments) = (ReserveBatchCall.script, call.keys, call.arguments)
        }
        redis.evalSHA(script, keys: keys, arguments: arguments, on: eventLoop, replication: ReserveBatchCall.replication) {
            result in
            let outcomes: Result<ReserveBatchCall.Outcome, any Error> = result.flatMap { reply in
                metrics.redisCall(NIODeadline.now() - started)
                return Result {
                    let outcomes = try ReserveBatchCall.decode(reply)
                    guard outcomes.count == requests.count else { throw StoreReplyError("reserve", reply) }
                    return outcomes
                }
            }
            switch outcomes {
            case .success(let outcomes):
                for (request, outcome) in zip(requests, outcomes) { request.completion(outcome) }
            case .failure(let error):
                for request in requests { request.completion(.failure(error)) }
            }
        }
    }

    /// One event loop's open groups, by basket, in arrival order.
    ///
    /// `@unchecked Sendable`: `groups` and `scheduled` are read and written only on `eventLoop`
    /// (`reserve` checks `inEventLoop` before it touches them, and the flush runs there); the
    /// counters are atomics.
    fileprivate final class LoopGroups: @unchecked Sendable {
        let eventLoop: any EventLoop
        let calls = Atomic<Int>(0)
        let requests = Atomic<Int>(0)
        private var groups: [[Pending]] = []
        private var groupOfBasket: [String: Int] = [:]
        private var scheduled = false

        init(eventLoop: any EventLoop) {
            self.eventLoop = eventLoop
        }

        /// Adds a request to its basket's group. A group that reached the most a call takes is
        /// sent now, and with it every group opened before it (in arrival order: a hot basket
        /// does not overtake the others); the next request of each of their baskets starts a new
        /// group, after the groups still open.
        func add(_ request: Pending, coalescer: ReserveCoalescer) -> [[Pending]] {
            if !scheduled {
                scheduled = true
                // right before the connection's next batch (a lone request leaves with whatever
                // else this turn sends, never a batch later)
                coalescer.redis.beforeNextBatch(on: eventLoop) { self.flush(coalescer) }
            }
            let basketId = request.call.basketId
            guard let index = groupOfBasket[basketId] else {
                groupOfBasket[basketId] = groups.count
                groups.append([request])
                return []
            }
            groups[index].append(request)
            guard groups[index].count >= ReserveBatchCall.maxRequests else { return [] }
            let ready = groups[...index].filter { !$0.isEmpty }
            for earlier in 0...index { groups[earlier] = [] }
            // the next request of each basket sent now opens a group at the end, behind the
            // groups opened meanwhile (kept, it would fill its old place and leave before them)
            for group in ready { groupOfBasket[group[0].call.basketId] = nil }
            return Array(ready)
        }

        private func flush(_ coalescer: ReserveCoalescer) {
            let ready = groups
            groups.removeAll(keepingCapacity: true)
            groupOfBasket.removeAll(keepingCapacity: true)
            scheduled = false
            for group in ready where !group.isEmpty { coalescer.send(group, on: eventLoop, counts: self) }
        }
    }
}
