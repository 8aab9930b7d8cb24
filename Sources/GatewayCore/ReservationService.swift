import NIOCore
import RedisClient
import ReservationCore
import Synchronization

/// The gateway's operations, each one Redis round trip (one script call or one read) on the
/// caller's event loop. Validation of ids and bodies happens before this layer.
public final class ReservationService: Sendable {
    let redis: RedisClient
    let configuration: Configuration
    let metrics: GatewayMetrics
    private let ids = ReservationIdGenerator()
    let soldOut: SoldOutCache

    public init(redis: RedisClient, configuration: Configuration, metrics: GatewayMetrics) {
        self.redis = redis
        self.configuration = configuration
        self.metrics = metrics
        self.soldOut = SoldOutCache(milliseconds: configuration.soldOutCacheMilliseconds)
    }

    /// A Redis call whose reply `decode` turns into the answer, with its latency recorded; one
    /// future node per call (this is the hot path).
    private func call<T>(
        _ future: EventLoopFuture<RedisValue>, _ decode: @escaping @Sendable (RedisValue) throws -> T
    ) -> EventLoopFuture<T> {
        let started = NIODeadline.now()
        return future.flatMapThrowing { reply in
            self.metrics.redisCall(NIODeadline.now() - started)
            return try decode(reply)
        }
    }

    private func timed(_ future: EventLoopFuture<RedisValue>) -> EventLoopFuture<RedisValue> {
        call(future) { $0 }
    }

    private func script(_ script: RedisScript, keys: [RedisArgument], arguments: [RedisArgument], on eventLoop: EventLoop) -> EventLoopFuture<RedisValue> {
        timed(redis.evalSHA(script, keys: keys, arguments: arguments, on: eventLoop))
    }

    // MARK: baskets

    /// The most units a basket may ever have (stock + pending + confirmed), and so the bound of
    /// every count the gateway reports: far below 2^31, so no sum overflows anywhere.
    public static let maxCapacity = 1_000_000_000

    public func createBasket(
        _ basketId: String, stock: Int, holdSeconds: Int, maxPerConsumer: Int, on eventLoop: EventLoop
    ) -> EventLoopFuture<BasketView> {
        let partition = Keyspace.partition(ofBasket: basketId)
        return script(
            ReservationScripts.basket,
            keys: [.string(Keyspace.basket(basketId, partition: partition)), .string(Keyspace.stream(partition)),
                   .string(Keyspace.basketIndex(partition))],
            arguments: ["create", .string(basketId), .int(stock), .int(holdSeconds), .int(maxPerConsumer)],
            on: eventLoop
        ).flatMapThrowing { try Self.basketView(basketId, $0) }
    }

    public func adjustStock(_ basketId: String, delta: Int, on eventLoop: EventLoop) -> EventLoopFuture<BasketView> {
        let partition = Keyspace.partition(ofBasket: basketId)
        return script(
            ReservationScripts.basket,
            keys: [.string(Keyspace.basket(basketId, partition: partition)), .string(Keyspace.stream(partition)),
                   .string(Keyspace.basketIndex(partition))],
            arguments: ["adjust", .string(basketId), .int(delta), .int(Self.maxCapacity)],
            on: eventLoop
        ).flatMapThrowing { reply in
            let view = try Self.basketView(basketId, reply)
            if delta > 0 { self.soldOut.clear(basketId) }
            return view
        }
    }

    public func basket(_ basketId: String, on eventLoop: EventLoop) -> EventLoopFuture<BasketView> {
        let partition = Keyspace.partition(ofBasket: basketId)
        return timed(redis.send(
            ["HMGET", .string(Keyspace.basket(basketId, partition: partition)),
             "stock", "pending", "confirmed", "capacity", "hold", "max"], on: eventLoop)
        ).flatMapThrowing { reply in
            try Self.basketView(basketId, .array([.bulk(Array("ok".utf8))] + (reply.array ?? [])))
        }
    }

    static func basketView(_ basketId: String, _ reply: RedisValue) throws -> BasketView {
        guard let fields = reply.array, let answer = fields.first?.string else { throw APIError.internalError }
        switch answer {
        case "ok": break
        case "basket_exists": throw APIError.basketExists
        case "basket_not_found": throw APIError.basketNotFound
        case "insufficient_stock": throw APIError.insufficientStock
        case "capacity_exceeded": throw APIError.capacityExceeded
        case "unavailable": throw APIError.unavailable("the basket is being repaired; retry shortly")
        default: throw APIError.internalError
        }
        guard fields.count == 7 else { throw APIError.internalError }
        guard let stock = fields[1].int else { throw APIError.basketNotFound }
        return BasketView(
            basketId: basketId, stock: stock, pending: fields[2].int ?? 0, confirmed: fields[3].int ?? 0,
            capacity: fields[4].int ?? stock, holdSeconds: fields[5].int ?? 0, maxPerConsumer: fields[6].int ?? 1)
    }

    // MARK: reservations

    public struct ReserveRequest: Sendable, Equatable {
        public var basketId: String
        public var consumerId: String
        public var quantity: Int
        public var idempotencyKey: String?
    }

    /// Returns the 201 body or throws the refusal. One script call; nothing else touches Redis.
    func reserve(_ request: ReserveRequest, on eventLoop: EventLoop) -> EventLoopFuture<ReserveAnswer> {
        if request.idempotencyKey == nil, soldOut.isSoldOut(request.basketId, quantity: request.quantity) {
            // Refuse-only shortcut: a recent sold_out for this basket stands for a few ms.
            return eventLoop.makeSucceededFuture(.refused(.soldOut))
        }
        let cacheGeneration = soldOut.generation
        let partition = Keyspace.partition(ofBasket: request.basketId)
        let basketKey = RedisArgument.string(Keyspace.basket(request.basketId, partition: partition))
        let reservationId = ids.next(partition: partition)
        let limit = configuration.reserveRateLimit
        var fingerprint = ""
        var idempotencyKey = basketKey
        if let key = request.idempotencyKey {
            fingerprint = request.consumerId + "\n" + String(request.quantity)
            idempotencyKey = .string(Keyspace.idempotency(basketId: request.basketId, key: key, partition: partition))
        }
        let keys: [RedisArgument] = [
            basketKey,
            .string(Keyspace.reservation(reservationId, partition: partition)),
            .string(Keyspace.consumerUnits(basketId: request.basketId, consumerId: request.consumerId, partition: partition)),
            .string(Keyspace.holds(partition)),
            .string(Keyspace.stream(partition)),
            idempotencyKey,
            limit > 0 ? .string(Keyspace.rateLimit(consumerId: request.consumerId, partition: partition)) : basketKey,
        ]
        let arguments: [RedisArgument] = [
            .string(request.basketId), .string(request.consumerId), .int(request.quantity), .string(reservationId),
            .int(limit), .string(fingerprint), .int(Retention.idempotencySeconds), .int(Retention.finishedReservationSeconds),
        ]
        return call(redis.evalSHA(ReservationScripts.reserve, keys: keys, arguments: arguments, on: eventLoop)) { reply in
            guard let encoded = reply.string else { throw APIError.internalError }
            let answer = try ReserveAnswer(encoded)
            if case .refused(.soldOut) = answer {
                self.soldOut.markSoldOut(request.basketId, quantity: request.quantity, ifUnchangedSince: cacheGeneration)
            }
            return answer
        }
    }

    public func reservation(_ reservationId: String, on eventLoop: EventLoop) -> EventLoopFuture<ReservationView> {
        guard let partition = ReservationIdGenerator.partition(of: reservationId) else {
            return eventLoop.makeFailedFuture(APIError.reservationNotFound)
        }
        return timed(redis.send(
            ["HMGET", .string(Keyspace.reservation(reservationId, partition: partition)),
             "basket", "consumer", "qty", "status", "exp", "pay"], on: eventLoop)
        ).flatMapThrowing { reply in
            try Self.reservationView(reservationId, reply.array ?? [])
        }
    }

    public func cancel(_ reservationId: String, on eventLoop: EventLoop) -> EventLoopFuture<ReservationView> {
        guard let partition = ReservationIdGenerator.partition(of: reservationId) else {
            return eventLoop.makeFailedFuture(APIError.reservationNotFound)
        }
        return script(
            ReservationScripts.release,
            keys: [.string(Keyspace.holds(partition)), .string(Keyspace.stream(partition)),
                   .string(Keyspace.reservation(reservationId, partition: partition))],
            arguments: ["cancel", .string(Keyspace.prefix(partition)), .string(reservationId), .int(Retention.finishedReservationSeconds)],
            on: eventLoop
        ).flatMapThrowing { reply in
            guard let fields = reply.array, let answer = fields.first?.string else { throw APIError.internalError }
            switch answer {
            case "cancelled":
                let view = try Self.reservationView(reservationId, Array(fields.dropFirst()))
                self.soldOut.clear(view.basketId)
                return view
            case "reservation_not_found": throw APIError.reservationNotFound
            case "reservation_expired":
                self.soldOut.clearAll()
                throw APIError.reservationExpired
            case "unavailable": throw APIError.unavailable("the basket is being repaired; retry shortly")
            default: throw APIError.internalError
            }
        }
    }

    static func reservationView(_ reservationId: String, _ fields: [RedisValue]) throws -> ReservationView {
        guard fields.count >= 6 else { throw APIError.internalError }
        guard let basketId = fields[0].string else { throw APIError.reservationNotFound }
        let payment = fields[5].string
        return ReservationView(
            reservationId: reservationId, basketId: basketId, consumerId: fields[1].string ?? "",
            quantity: fields[2].int ?? 0, status: fields[3].string ?? "pending",
            expiresAtMilliseconds: Int64(fields[4].int ?? 0),
            paymentId: (payment?.isEmpty ?? true) ? nil : payment)
    }

    // MARK: payments

    public struct PaymentEvent: Sendable, Equatable {
        public var eventId: String
        public var type: String
        public var reservationId: String
        public var paymentId: String
        public var amountCents: Int64
        public var currency: String
    }

    public enum PaymentResult: Sendable, Equatable {
        case processed(outcome: String)
        case duplicate
    }

    public func applyPayment(_ event: PaymentEvent, on eventLoop: EventLoop) -> EventLoopFuture<PaymentResult> {
        let partition = ReservationIdGenerator.partition(of: event.reservationId)
            ?? Keyspace.partition(ofForeignId: event.reservationId)
        return script(
            ReservationScripts.payment,
            keys: [.string(Keyspace.webhookClaim(eventId: event.eventId, partition: partition)),
                   .string(Keyspace.reservation(event.reservationId, partition: partition)),
                   .string(Keyspace.holds(partition)), .string(Keyspace.stream(partition))],
            arguments: [.string(Keyspace.prefix(partition)), .string(event.eventId), .string(event.type),
                        .string(event.reservationId), .string(event.paymentId), .int(Int(event.amountCents)),
                        .string(event.currency), .int(Retention.webhookClaimSeconds), .int(Retention.finishedReservationSeconds)],
            on: eventLoop
        ).flatMapThrowing { reply in
            guard let fields = reply.array, let answer = fields.first?.string else { throw APIError.internalError }
            switch answer {
            case "duplicate": return .duplicate
            case "processed":
                guard fields.count == 2, let outcome = fields[1].string else { throw APIError.internalError }
                return .processed(outcome: outcome)
            case "unavailable": throw APIError.unavailable("the basket is being repaired; retry shortly")
            default: throw APIError.internalError
            }
        }
    }

    // MARK: holds

    /// Expires every due hold of every partition (in batches). Safe to run in several gateways
    /// at once: a hold is expired by exactly one script run, whichever comes first.
    public func expireDueHolds() async throws -> Int {
        let batch = 500
        var total = 0
        for partition in 0..<Keyspace.partitionCount {
            while true {
                let reply = try await redis.evalSHA(
                    ReservationScripts.release,
                    keys: [.string(Keyspace.holds(partition)), .string(Keyspace.stream(partition)), .string(Keyspace.holds(partition))],
                    arguments: ["expire", .string(Keyspace.prefix(partition)), .int(batch), .int(Retention.finishedReservationSeconds)])
                let expired = reply.int ?? 0
                total += expired
                if expired < batch { break }
            }
        }
        if total > 0 {
            soldOut.clearAll()
            metrics.holdsExpired(total)
        }
        return total
    }
}

/// Remembers, for a few milliseconds, that a basket answered sold_out, so a stampede on a sold-out
/// basket is refused without a Redis round trip. It only ever refuses what Redis would refuse: a
/// sold_out for q units means fewer than q were left, so it refuses q or more, never fewer (a
/// stream of too-large requests must not keep the last units unsellable). It never grants. Any
/// cancel, expiry or stock increase seen by this gateway clears it; other gateways' releases are
/// seen when the entry runs out.
/// A sold_out answer that left Redis before a release this gateway saw is not remembered
/// (`generation` tells), so the cache never outlives a release it knows about.
final class SoldOutCache: Sendable {
    struct Entry {
        /// Uptime nanoseconds until which the entry stands.
        var until: Int64
        /// The smallest quantity refused: Redis had fewer units than this.
        var quantity: Int
    }

    private let ttl: Int64
    private let entries = Mutex<[String: Entry]>([:])
    private let releases = Atomic<UInt64>(0)

    var generation: UInt64 { releases.load(ordering: .acquiring) }

    init(milliseconds: Int) { self.ttl = Int64(milliseconds) * 1_000_000 }

    func isSoldOut(_ basketId: String, quantity: Int) -> Bool {
        guard ttl > 0 else { return false }
        let now = Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds)
        return entries.withLock { entries in
            guard let entry = entries[basketId] else { return false }
            if now >= entry.until {
                entries[basketId] = nil
                return false
            }
            return quantity >= entry.quantity
        }
    }

    func markSoldOut(_ basketId: String, quantity: Int, ifUnchangedSince generation: UInt64) {
        guard ttl > 0 else { return }
        let now = Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds)
        entries.withLock { entries in
            guard releases.load(ordering: .acquiring) == generation else { return }
            if entries.count > 10_000 { entries.removeAll() }
            // Each entry stands for one real refusal: a larger refused quantity neither replaces a
            // smaller one nor extends its time (that would let a stream of too-large requests keep
            // a stale refusal alive).
            if let existing = entries[basketId], now < existing.until, existing.quantity < quantity { return }
            entries[basketId] = Entry(until: now + ttl, quantity: quantity)
        }
    }

    func clear(_ basketId: String) {
        guard ttl > 0 else { return }
        entries.withLock { entries in
            releases.wrappingAdd(1, ordering: .releasing)
            entries[basketId] = nil
        }
    }

    func clearAll() {
        guard ttl > 0 else { return }
        entries.withLock { entries in
            releases.wrappingAdd(1, ordering: .releasing)
            entries.removeAll()
        }
    }
}
