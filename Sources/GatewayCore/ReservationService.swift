public import NIOCore
public import RedisClient
public import ReservationCore
public import ReservationScripts
import WaitingRoom

/// A refusal of the reservation service, in the domain's words. Store failures (Redis
/// unreachable, overloaded, a reply of the wrong shape) pass through as the store's own errors;
/// `APIError.init(_:)` maps both to HTTP, the one place that happens.
public enum ReservationError: Error, Sendable, Equatable {
    case basketNotFound
    case basketExists
    case insufficientStock
    case capacityExceeded
    case reservationNotFound
    case reservationExpired
    /// The basket is out of service for a repair (or missing in Redis until it is rebuilt).
    case underRepair
    /// The sale would close before it opens.
    case invalidWindow
    /// A queue request on a basket without a waiting room.
    case noWaitingRoom
    /// A join after the sale closed.
    case saleClosed
    /// A waiting-room ticket that is not this room's, this basket's or this consumer's.
    case ticketNotFound
    /// The store answered something that cannot happen with the gateway's own data (an id
    /// collision, a reservation that changed between two reads of an immutable field).
    case inconsistentStore(String)
}

/// The gateway's operations, each one typed store call (a script or a read; cancel and payment
/// read the reservation's basket first, to name every key their script touches) on the
/// caller's event loop. Validation of ids and bodies happens before this layer; nothing here
/// knows about HTTP.
public final class ReservationService: Sendable {
    let redis: RedisClient
    let configuration: GatewayConfiguration
    let metrics: GatewayMetrics
    private let ids = ReservationIdGenerator()
    let soldOut: SoldOutCache
    /// Waiting rooms: each room's last snapshot (polls), and the signer of tickets and admissions.
    let rooms: RoomCache
    let passes: RoomPasses
    /// Reservations of one basket that an event loop collects for its next Redis batch go as one call.
    let coalescer: ReserveCoalescer

    public init(redis: RedisClient, configuration: GatewayConfiguration, metrics: GatewayMetrics) {
        self.redis = redis
        self.configuration = configuration
        self.metrics = metrics
        self.coalescer = ReserveCoalescer(redis: redis, metrics: metrics)
        self.passes = RoomPasses(secret: Array((configuration.admissionSecret ?? "").utf8))
        self.rooms = RoomCache(maxAge: .milliseconds(Int64(configuration.queueCacheMilliseconds)))
        // A refresh's call is answered or failed within the command timeout (a batch unanswered
        // that long resets the connection and fails its calls).
        self.soldOut = SoldOutCache(
            milliseconds: configuration.soldOutCacheMilliseconds,
            refreshLimitMilliseconds: configuration.redisCommandTimeoutMilliseconds + configuration.soldOutCacheMilliseconds)
    }

    /// Runs a script call with its latency recorded and hands the decoded outcome to
    /// `completion`, with no future of its own (the reserve path uses this directly).
    private func run<Call: ScriptCall>(
        _ call: Call, on eventLoop: any EventLoop, completion: @escaping @Sendable (Result<Call.Outcome, any Error>) -> Void
    ) {
        let started = NIODeadline.now()
        redis.evalSHA(Call.script, keys: call.keys, arguments: call.arguments, on: eventLoop, replication: Call.replication) { result in
            completion(
                result.flatMap { reply in
                    self.metrics.redisCall(NIODeadline.now() - started)
                    return Result { try Call.decode(reply) }
                })
        }
    }

    /// The same, and `decide` turns the outcome into the answer: one future per call after the
    /// store's.
    func run<Call: ScriptCall, T>(
        _ call: Call, on eventLoop: any EventLoop, _ decide: @escaping @Sendable (Call.Outcome) throws -> T
    ) -> EventLoopFuture<T> {
        let promise = eventLoop.makePromise(of: T.self)
        run(call, on: eventLoop) { result in promise.completeWith(result.flatMap { outcome in Result { try decide(outcome) } }) }
        return promise.futureResult
    }

    private func run<Call: CommandCall, T>(
        _ call: Call, on eventLoop: any EventLoop, _ decide: @escaping @Sendable (Call.Outcome) throws -> T
    ) -> EventLoopFuture<T> {
        let started = NIODeadline.now()
        return redis.send(call.command, on: eventLoop).flatMapThrowing { reply in
            self.metrics.redisCall(NIODeadline.now() - started)
            return try decide(try Call.decode(reply))
        }
    }

    /// Batches written to Redis and commands sent in them so far (the metrics page shows both:
    /// their ratio is the pipelining depth).
    public var redisPipelining: (batches: Int, commands: Int) { (redis.batchesWritten, redis.commandsSent) }

    /// Reserve script calls sent and the reservation requests they decided (their ratio is the
    /// coalescing: reservations per call).
    public var reserveCoalescing: (calls: Int, requests: Int) { coalescer.counts }

    /// REDIS_WAIT_REPLICAS: `WAIT`s answered, those that counted too few replicas, and replies
    /// held for one (all 0 when it is off).
    public var redisReplicationWaits: (waits: Int, timeouts: Int, heldReplies: Int) { redis.replicationWaits }

    /// Whether the store answers (readiness).
    public func checkStore(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        redis.send(["PING"], on: eventLoop).map { _ in }
    }

    // MARK: baskets

    /// The most units a basket may ever have (stock + pending + confirmed), and so the bound of
    /// every count the gateway reports: far below 2^31, so no sum overflows anywhere.
    public static let maxCapacity = 1_000_000_000

    public func createBasket(
        _ basketId: String, stock: Int, settings: BasketSettings, on eventLoop: any EventLoop
    ) -> EventLoopFuture<BasketState> {
        run(CreateBasketCall(basketId: basketId, stock: stock, settings: settings), on: eventLoop) {
            switch $0 {
            case .created(let state): return state
            case .exists: throw ReservationError.basketExists
            case .unavailable: throw ReservationError.underRepair
            }
        }
    }

    /// PATCH: changes some settings. The sold-out memory of this gateway forgets the basket (a
    /// pause or a new window answers every request after this one; other gateways' memories last
    /// a few milliseconds at most).
    public func updateBasket(_ basketId: String, change: UpdateBasketCall.Change, on eventLoop: any EventLoop) -> EventLoopFuture<BasketState> {
        run(UpdateBasketCall(basketId: basketId, change: change), on: eventLoop) { outcome in
            switch outcome {
            case .updated(let state):
                self.soldOut.clear(basketId)
                self.rooms.forget(basketId)
                return state
            case .basketNotFound: throw ReservationError.basketNotFound
            case .invalidWindow: throw ReservationError.invalidWindow
            case .unavailable: throw ReservationError.underRepair
            }
        }
    }

    public func adjustStock(_ basketId: String, delta: Int, on eventLoop: any EventLoop) -> EventLoopFuture<BasketState> {
        run(AdjustBasketCall(basketId: basketId, delta: delta, maxCapacity: Self.maxCapacity), on: eventLoop) { outcome in
            switch outcome {
            case .adjusted(let state):
                if delta > 0 { self.soldOut.clear(basketId) }
                return state
            case .basketNotFound: throw ReservationError.basketNotFound
            case .insufficientStock: throw ReservationError.insufficientStock
            case .capacityExceeded: throw ReservationError.capacityExceeded
            case .unavailable: throw ReservationError.underRepair
            }
        }
    }

    /// A basket Redis lost (and the reconciler has not rebuilt yet) is under repair, not absent:
    /// asked only when the read found nothing.
    public func basket(_ basketId: String, on eventLoop: any EventLoop) -> EventLoopFuture<BasketState> {
        run(BasketViewCall(basketId: basketId), on: eventLoop) { $0 }.flatMap { state in
            if let state { return eventLoop.makeSucceededFuture(state) }
            return self.run(IsLostBasketCall(basketId: basketId), on: eventLoop) { lost in
                throw lost ? ReservationError.underRepair : ReservationError.basketNotFound
            }
        }
    }

    /// The basket's view, with its waiting room's snapshot when it has one (the room's counts
    /// and, after the opening, the draw's seed).
    public func basketWithRoom(_ basketId: String, on eventLoop: any EventLoop) -> EventLoopFuture<(BasketState, RoomSnapshot?)> {
        basket(basketId, on: eventLoop).flatMap { state in
            guard state.settings.waitingRoom != nil else { return eventLoop.makeSucceededFuture((state, nil)) }
            // The room's counts from this gateway's snapshot (at most a second old): a public
            // view read at the opening second costs Redis no more than the polls do.
            return self.rooms.snapshot(basketId, on: eventLoop) { self.readRoom(basketId, on: eventLoop) }.map { fresh in
                var room = fresh.snapshot
                room.observedAtMilliseconds = fresh.now()
                return (state, room)
            }.flatMapErrorThrowing { error in
                // the room went between the two reads (a PATCH removed it): the basket as read
                if case ReservationError.ticketNotFound = error { return (state, nil) }
                throw error
            }
        }
    }

    // MARK: reservations

    public struct ReserveRequest: Sendable, Equatable {
        public var basketId: String
        /// What is asked: every field of it is stored, and compared under an Idempotency-Key.
        public var asked: ReservationRequest
        public var idempotencyKey: String?
        /// The `Admission-Token` header as sent (checked when the reservation is made).
        public var admissionToken: String? = nil

        public var consumerId: String { asked.consumerId }
        public var quantity: Int { asked.quantity }
    }

    /// Whether a recent `sold_out` for this basket and quantity answers `request` without the
    /// script (with an Idempotency-Key, after one read of its record: see `reserve`). Asked once
    /// per request: the answer is handed on to `reserve`.
    func soldOutCheck(_ request: ReserveRequest) -> SoldOutCache.Answer {
        soldOut.check(request.basketId, quantity: request.quantity)
    }

    /// One script call, shared with the other requests for the basket this turn of the loop
    /// (`ReserveCoalescer`); nothing else touches Redis. Refusals are outcomes, not errors: a flash
    /// sale answers far more of them than grants. The answer goes to `completion` on the Redis
    /// reply's loop, without a derived future: this is the path a flash sale runs most, and each
    /// future is an allocation, a callback list and a generic lookup.
    /// `memory`: what `soldOutCheck` said of this request (asked once: a refresh is claimed by it).
    func reserve(
        _ request: ReserveRequest, checked memory: SoldOutCache.Answer, on eventLoop: any EventLoop,
        _ completion: @escaping @Sendable (Result<ReserveCall.Outcome, any Error>) -> Void
    ) {
        if memory == .soldOut {
            // Refuse-only shortcut: a recent sold_out for this basket stands for a few ms.
            guard let key = request.idempotencyKey else {
                completion(.success(.soldOut))
                return
            }
            // A keyed request costs one small script: its stored answer is replayed (a grant made
            // before the sale ran out still wins); with none, sold_out is stored under the key for
            // the refusal window, so a retry gets the same answer.
            replayOrRefuse(request, key: key, on: eventLoop, completion)
            return
        }
        let cacheGeneration = soldOut.generation
        let call = ReserveCall(
            basketId: request.basketId, request: request.asked,
            reservationId: ids.next(partition: Keyspace.partition(ofBasket: request.basketId)),
            attemptsPerSecond: configuration.reserveRateLimit, idempotencyKey: request.idempotencyKey,
            refusalSeconds: configuration.idempotencyRefusalSeconds, admission: request.admissionToken == nil ? nil : admission(for: request))
        coalescer.reserve(call, on: eventLoop) { result in
            if case .success(.soldOut) = result {
                self.soldOut.markSoldOut(request.basketId, quantity: request.quantity, ifUnchangedSince: cacheGeneration)
            } else if case .success(.soldOutClosingIn(let left)) = result {
                self.soldOut.markSoldOut(
                    request.basketId, quantity: request.quantity, ifUnchangedSince: cacheGeneration, closesInMilliseconds: left)
            } else if memory == .refresh {
                self.soldOut.endRefresh(request.basketId)
            }
            completion(result)
        }
    }

    private func replayOrRefuse(
        _ request: ReserveRequest, key: String, on eventLoop: any EventLoop,
        _ completion: @escaping @Sendable (Result<ReserveCall.Outcome, any Error>) -> Void
    ) {
        let call = RefuseSoldOutCall(
            basketId: request.basketId, request: request.asked, idempotencyKey: key,
            refusalSeconds: configuration.idempotencyRefusalSeconds)
        run(call, on: eventLoop) { result in
            switch result {
            case .success(.answered(let outcome)): completion(.success(outcome))
            // A record in a form only the reserve script reads: it answers.
            case .success(.ask): self.reserve(request, checked: .ask, on: eventLoop, completion)
            case .failure(let error): completion(.failure(error))
            }
        }
    }

    func reserve(_ request: ReserveRequest, on eventLoop: any EventLoop) -> EventLoopFuture<ReserveCall.Outcome> {
        let promise = eventLoop.makePromise(of: ReserveCall.Outcome.self)
        reserve(request, checked: soldOutCheck(request), on: eventLoop) { promise.completeWith($0) }
        return promise.futureResult
    }

    /// Who asks for a reservation: anyone holding its id (`trusted` mode), its own consumer, or the admin.
    public enum Requester: Sendable, Equatable {
        case holderOfTheId
        case consumer(String)
        case admin

        /// Whether it may see `record`; anyone else is answered as if it did not exist.
        func owns(_ record: ReservationRecord) -> Bool {
            switch self {
            case .holderOfTheId, .admin: return true
            case .consumer(let consumerId): return consumerId == record.consumerId
            }
        }
    }

    public func reservation(
        _ reservationId: String, for requester: Requester = .holderOfTheId, on eventLoop: any EventLoop
    ) -> EventLoopFuture<ReservationRecord> {
        guard let partition = ReservationIdGenerator.partition(of: reservationId) else {
            return eventLoop.makeFailedFuture(ReservationError.reservationNotFound)
        }
        return run(ReadReservationCall(reservationId: reservationId, partition: partition), on: eventLoop) { record in
            // Another consumer's reservation is not found: the same answer as an unknown id.
            guard let record, requester.owns(record) else { throw ReservationError.reservationNotFound }
            return record
        }
    }

    /// Reads the reservation (its basket and consumer name the keys, and say whose it is), then cancels it.
    public func cancel(
        _ reservationId: String, for requester: Requester = .holderOfTheId, on eventLoop: any EventLoop
    ) -> EventLoopFuture<ReservationRecord> {
        guard let partition = ReservationIdGenerator.partition(of: reservationId) else {
            return eventLoop.makeFailedFuture(ReservationError.reservationNotFound)
        }
        return reservation(reservationId, for: requester, on: eventLoop).flatMap { record in
            let target = ReleaseTarget(reservationId: reservationId, basketId: record.basketId, consumerId: record.consumerId)
            return self.run(CancelReservationCall(target, partition: partition), on: eventLoop) { outcome in
                switch outcome {
                case .cancelled(let record):
                    self.soldOut.clear(record.basketId)
                    return record
                case .reservationNotFound: throw ReservationError.reservationNotFound
                case .reservationExpired:
                    self.soldOut.clearAll()
                    throw ReservationError.reservationExpired
                case .unavailable: throw ReservationError.underRepair
                case .staleKeys: throw ReservationError.inconsistentStore("reservation changed basket or consumer")
                }
            }
        }
    }

    // MARK: payments

    /// Reads the reservation's basket (it names the basket key), then applies the event. The
    /// basket of a reservation never changes, so a second read is needed only if the
    /// reservation appeared or vanished between the two steps; after three tries the answer is
    /// an error the payment provider retries.
    public func applyPayment(_ event: PaymentCall.Event, on eventLoop: any EventLoop) -> EventLoopFuture<PaymentOutcome?> {
        let partition =
            ReservationIdGenerator.partition(of: event.reservationId)
            ?? Keyspace.partition(ofForeignId: event.reservationId)
        return applyPayment(event, partition: partition, attempt: 1, on: eventLoop)
    }

    /// nil: a duplicate delivery.
    private func applyPayment(_ event: PaymentCall.Event, partition: Int, attempt: Int, on eventLoop: any EventLoop) -> EventLoopFuture<
        PaymentOutcome?
    > {
        run(ReadReservationCall(reservationId: event.reservationId, partition: partition), on: eventLoop) { $0?.basketId }
            .flatMap { basketId in
                self.run(PaymentCall(event, partition: partition, basketId: basketId), on: eventLoop) { $0 }
            }
            .flatMapThrowing { outcome -> PaymentOutcome?? in
                switch outcome {
                case .processed(let outcome): return .some(outcome)
                case .duplicate: return .some(nil)
                case .unavailable: throw ReservationError.underRepair
                case .staleKeys:
                    if attempt >= 3 { throw ReservationError.inconsistentStore("reservation changed during a payment") }
                    return nil
                }
            }
            .flatMap { settled in
                if let settled { return eventLoop.makeSucceededFuture(settled) }
                return self.applyPayment(event, partition: partition, attempt: attempt + 1, on: eventLoop)
            }
    }

    // MARK: holds

    /// Expires every due hold of every partition (in batches). Safe to run in several gateways
    /// at once: a hold is expired by exactly one script run, whichever comes first. The due ids
    /// (due by Redis's clock, as the script decides) and their baskets are read first (they
    /// name the keys); the script expires only those still pending and due. Holds it has to
    /// leave (their basket is under repair) it looks at again 5 s later, so one basket never
    /// holds up its partition and costs a round nothing meanwhile.
    /// A partition that fails (its primary unreachable, or with REDIS_WAIT_REPLICAS its replicas
    /// not acknowledging) stops only itself: the others are expired, then the first error is thrown.
    public func expireDueHolds() async throws -> Int {
        let batch = 500
        var total = 0
        var firstError: (any Error)?
        for partition in 0..<Keyspace.partitionCount {
            do {
                while true {
                    let due = try await redis.run(DueHoldsCall(partition: partition, limit: batch))
                    if due.isEmpty { break }
                    let reads = try await redis.pipeline(due.map { ReadReservationCall(reservationId: $0, partition: partition).command })
                    let targets = zip(due, reads).map { id, reply in
                        let record = (try? reply.get()).flatMap { try? ReadReservationCall.decode($0) } ?? nil
                        return ReleaseTarget(reservationId: id, basketId: record?.basketId ?? "", consumerId: record?.consumerId ?? "")
                    }
                    // Every hold listed is expired, removed, or moved on by 5 s: each page progresses.
                    let (expired, _) = try await redis.run(ExpireHoldsCall(targets, partition: partition))
                    total += expired
                    if due.count < batch { break }
                }
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        if total > 0 {
            soldOut.clearAll()
            metrics.holdsExpired(total)
        }
        if let firstError { throw firstError }
        return total
    }
}
