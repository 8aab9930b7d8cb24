public import NIOCore
import ReservationCore
import ReservationScripts
import Synchronization
public import WaitingRoom

/// Each waiting room's last snapshot, for about a second: polls are answered from it and the
/// ticket alone, so a million clients polling cost Redis one call per room per gateway per
/// refresh. Refreshes are single-flight (one call per room however many polls wait for it), and a
/// snapshot of a room not drawn yet is not used past its opening (the refresh makes the draw).
final class RoomCache: Sendable {
    struct Fresh: Sendable {
        let snapshot: RoomSnapshot
        let fetchedAt: NIODeadline

        /// Redis's clock now, extrapolated from the snapshot's reading.
        func now(_ deadline: NIODeadline = .now()) -> Int64 {
            snapshot.observedAtMilliseconds + (deadline - fetchedAt).nanoseconds / 1_000_000
        }
    }

    private enum Slot {
        case ready(Fresh)
        /// A read in flight, the polls waiting for it, and whether the room was forgotten
        /// meanwhile (a PATCH: the read may predate it, so it answers its waiters but is not kept).
        case loading([EventLoopPromise<Fresh>], forgotten: Bool)
    }

    private let slots = Mutex<[String: Slot]>([:])
    /// Whether any room was ever held: a gateway without rooms skips the lookup on every reservation.
    private let heldAny = Atomic<Bool>(false)
    var mayHoldRooms: Bool { heldAny.load(ordering: .relaxed) }
    private let maxAge: TimeAmount
    /// Rooms remembered at most (a room is only reached with a ticket this deployment signed, so
    /// only real rooms get here; beyond this the memory starts over).
    static let maxRooms = 10_000

    init(maxAge: TimeAmount = .seconds(1)) {
        self.maxAge = maxAge
    }

    /// The room's snapshot, fresh enough; `fetch` reads it from Redis when it is not.
    func snapshot(
        _ basketId: String, on eventLoop: any EventLoop, fetch: @escaping @Sendable () -> EventLoopFuture<RoomSnapshot>
    ) -> EventLoopFuture<Fresh> {
        let now = NIODeadline.now()
        enum Next {
            case use(Fresh)
            case wait(EventLoopFuture<Fresh>)
            case load(EventLoopPromise<Fresh>)
        }
        let next: Next = slots.withLock { slots in
            switch slots[basketId] {
            case .ready(let fresh) where usable(fresh, at: now):
                return .use(fresh)
            case .loading(var waiting, let forgotten):
                let promise = eventLoop.makePromise(of: Fresh.self)
                waiting.append(promise)
                slots[basketId] = .loading(waiting, forgotten: forgotten)
                return .wait(promise.futureResult)
            default:
                if slots.count >= Self.maxRooms { Self.evictReady(&slots) }
                let promise = eventLoop.makePromise(of: Fresh.self)
                slots[basketId] = .loading([], forgotten: false)
                return .load(promise)
            }
        }
        switch next {
        case .use(let fresh): return eventLoop.makeSucceededFuture(fresh)
        case .wait(let future): return future
        case .load(let promise):
            fetch().whenComplete { result in
                let fresh = result.map { Fresh(snapshot: $0, fetchedAt: .now()) }
                let waiting: [EventLoopPromise<Fresh>] = self.slots.withLock { slots in
                    guard case .loading(let waiting, let forgotten) = slots[basketId] else { return [] }
                    if case .success(let fresh) = fresh, !forgotten {
                        slots[basketId] = .ready(fresh)
                        self.heldAny.store(true, ordering: .relaxed)
                    } else {
                        slots[basketId] = nil
                    }
                    return waiting
                }
                promise.completeWith(fresh)
                for waiter in waiting { waiter.completeWith(fresh) }
            }
            return promise.futureResult
        }
    }

    /// The room's snapshot if this gateway holds a fresh one (a poll's path without a future).
    func cached(_ basketId: String) -> Fresh? {
        let now = NIODeadline.now()
        return slots.withLock { slots in
            if case .ready(let fresh) = slots[basketId], usable(fresh, at: now) { return fresh }
            return nil
        }
    }

    /// Keeps a snapshot a join just read (the freshest there is).
    func store(_ basketId: String, _ snapshot: RoomSnapshot) {
        slots.withLock { slots in
            if case .loading = slots[basketId] { return }
            if slots.count >= Self.maxRooms { Self.evictReady(&slots) }
            slots[basketId] = .ready(Fresh(snapshot: snapshot, fetchedAt: .now()))
            heldAny.store(true, ordering: .relaxed)
        }
    }

    /// Forgets a room (its settings changed: the next poll reads it again).
    func forget(_ basketId: String) {
        slots.withLock { slots in
            switch slots[basketId] {
            case .ready: slots[basketId] = nil
            case .loading(let waiting, _): slots[basketId] = .loading(waiting, forgotten: true)
            case nil: break
            }
        }
    }

    /// Forgets every room not being read (a room being read keeps its waiting polls).
    private static func evictReady(_ slots: inout [String: Slot]) {
        slots = slots.filter { if case .loading = $0.value { return true } else { return false } }
    }

    private func usable(_ fresh: Fresh, at now: NIODeadline) -> Bool {
        guard now - fresh.fetchedAt < maxAge else { return false }
        // Not drawn yet and past the opening: the draw is due, and the refresh makes it.
        if fresh.snapshot.room.preQueue == nil, let opens = fresh.snapshot.basket.settings.opensAtMilliseconds, fresh.now(now) >= opens {
            return false
        }
        return true
    }
}

/// A queue view with the passes it hands out, signed.
public struct SignedQueueView: Sendable {
    public var view: QueueView
    public var ticket: String
    public var admissionToken: String?
}

extension ReservationService {
    /// How long a ticket is good for: a day (joining again gives a fresh one for the same place).
    static let ticketMilliseconds: Int64 = 86_400_000

    /// Joins the basket's waiting room (or finds the consumer's place), and the view of it. An
    /// admission that expired unused puts the consumer at the back, with a second call.
    public func joinQueue(_ basketId: String, consumerId: String, on eventLoop: any EventLoop) -> EventLoopFuture<SignedQueueView> {
        join(basketId, consumerId: consumerId, replacing: nil, on: eventLoop).flatMap { outcome in
            let (snapshot, join) = outcome
            let view = self.view(basketId, consumerId: consumerId, join: join, snapshot)
            guard view.state == .expired else { return eventLoop.makeSucceededFuture(self.signed(view)) }
            return self.join(basketId, consumerId: consumerId, replacing: join, on: eventLoop).map { snapshot, join in
                self.signed(self.view(basketId, consumerId: consumerId, join: join, snapshot))
            }
        }
    }

    private func join(
        _ basketId: String, consumerId: String, replacing: Int64?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<(RoomSnapshot, Int64)> {
        metrics.queueJoined()
        let call = QueueCall(
            basketId: basketId, consumerId: consumerId, seed: RandomHex.make(bytes: 32), epoch: RandomHex.make(bytes: 16), replacing: replacing)
        return run(call, on: eventLoop) { outcome in
            switch outcome {
            case .room(let snapshot, let join?):
                self.rooms.store(basketId, snapshot)
                self.recordCounts(basketId, snapshot)
                return (snapshot, join)
            case .room: throw ReservationError.inconsistentStore("a join without a place")
            case .basketNotFound: throw ReservationError.basketNotFound
            case .noWaitingRoom: throw ReservationError.noWaitingRoom
            case .saleClosed: throw ReservationError.saleClosed
            case .unavailable: throw ReservationError.underRepair
            }
        }
    }

    private func view(_ basketId: String, consumerId: String, join: Int64, _ snapshot: RoomSnapshot) -> QueueView {
        let now = snapshot.observedAtMilliseconds
        let ticket = Ticket(
            basketId: basketId, consumerId: consumerId, epoch: snapshot.room.epoch, join: join, place: 0,
            expiresAtMilliseconds: now + Self.ticketMilliseconds)
        return QueueView.decide(ticket, in: snapshot, at: now)
    }

    /// A poll: the ticket checked (signature, basket, and in token mode its consumer), the room
    /// from this gateway's cache, the view decided here. The usual poll (the room cached) is
    /// answered before this returns, with no future and no Redis call; `completion` runs on
    /// `eventLoop` either way.
    public func queueStatus(
        _ basketId: String, ticket text: String, consumerId: String?, on eventLoop: any EventLoop,
        _ completion: @escaping @Sendable (Result<SignedQueueView, any Error>) -> Void
    ) {
        metrics.queuePolled()
        guard let ticket = passes.ticket(text), ticket.basketId == basketId, consumerId == nil || consumerId == ticket.consumerId
        else {
            return completion(.failure(ReservationError.ticketNotFound))
        }
        @Sendable func answer(_ fresh: RoomCache.Fresh) -> Result<SignedQueueView, any Error> {
            let now = fresh.now()
            // Another room (removed and made again, or lost with Redis's data), or an old ticket.
            // (A ticket's join number may be ahead of this snapshot: a join on another gateway.)
            guard fresh.snapshot.room.epoch == ticket.epoch, now < ticket.expiresAtMilliseconds else {
                return .failure(ReservationError.ticketNotFound)
            }
            return .success(signed(QueueView.decide(ticket, in: fresh.snapshot, at: now), asked: text, ticket))
        }
        if let fresh = rooms.cached(basketId) { return completion(answer(fresh)) }
        rooms.snapshot(basketId, on: eventLoop) { self.readRoom(basketId, on: eventLoop) }.whenComplete { result in
            completion(result.flatMap(answer))
        }
    }

    /// The room read from Redis (opening it, or drawing, when due): a cache refresh, or the basket view's counts.
    func readRoom(_ basketId: String, on eventLoop: any EventLoop) -> EventLoopFuture<RoomSnapshot> {
        metrics.queueRoomRead()
        let call = QueueCall(basketId: basketId, consumerId: nil, seed: RandomHex.make(bytes: 32), epoch: RandomHex.make(bytes: 16))
        return run(call, on: eventLoop) { outcome in
            switch outcome {
            case .room(let snapshot, _):
                self.recordCounts(basketId, snapshot)
                return snapshot
            // A ticket of a room that is gone (or a basket that is): no such ticket now.
            case .basketNotFound, .noWaitingRoom, .saleClosed: throw ReservationError.ticketNotFound
            case .unavailable: throw ReservationError.underRepair
            }
        }
    }

    private func recordCounts(_ basketId: String, _ snapshot: RoomSnapshot) {
        let counts = RoomCounts(snapshot, at: snapshot.observedAtMilliseconds)
        metrics.room(basketId, members: counts.members, waiting: counts.waiting, admitted: counts.admitted, expired: counts.expired)
    }

    private func signed(_ view: QueueView, asked text: String? = nil, _ asked: Ticket? = nil) -> SignedQueueView {
        metrics.queueView(GatewayMetrics.QueueStateLabel(rawValue: view.state.rawValue) ?? .waiting)
        // The same ticket is handed back as it came; one with its place newly fixed is signed again.
        let ticket = (text != nil && asked == view.ticket) ? text ?? "" : passes.sign(view.ticket)
        return SignedQueueView(view: view, ticket: ticket, admissionToken: view.admission.map { passes.sign($0) })
    }

    /// What this gateway knows of a reservation's waiting room before asking Redis.
    enum RoomCheck: Equatable {
        /// No room known here, or a case the reserve script must decide (the window, an admission
        /// about to expire, another room's epoch): the script answers.
        case ask
        /// The basket has a room, the sale is open, and the request carries no admission of it
        /// that could pass: the script would answer 403 `admission_required`.
        case refused
    }

    /// Refuses at once a reservation the reserve script would refuse for want of an admission,
    /// from this gateway's room snapshot (at most a second old: a room removed on another gateway
    /// may refuse here for that second). Bots without an admission cost Redis nothing.
    func roomCheck(_ request: ReserveRequest) -> RoomCheck {
        guard rooms.mayHoldRooms, let fresh = rooms.cached(request.basketId) else { return .ask }
        let settings = fresh.snapshot.basket.settings
        let now = fresh.now()
        // The script decides the window before the admission.
        guard settings.waitingRoom != nil, settings.state(at: now) == .open else { return .ask }
        guard let admission = admission(for: request) else { return .refused }
        // Clearly expired (a second's margin for the extrapolated clock) is refused; the rest is the script's.
        return admission.expiresAtMilliseconds < now - 1000 ? .refused : .ask
    }

    /// The verified admission a reservation carries, for its basket and consumer; nil for none
    /// (a forged, altered or foreign one counts as none: the script then refuses where a room is).
    func admission(for request: ReserveRequest) -> (expiresAtMilliseconds: Int64, epoch: String)? {
        guard let text = request.admissionToken, let admission = passes.admission(text), admission.basketId == request.basketId,
            admission.consumerId == request.consumerId
        else { return nil }
        return (admission.expiresAtMilliseconds, admission.epoch)
    }
}

/// A room's counts as the basket view and the metrics show them.
struct RoomCounts {
    /// Consumers holding a place.
    let members: Int64
    /// Places not admitted yet (every place past the admitted ones is held).
    let waiting: Int64
    let admitted: Int64
    /// Places whose admission expired (as far as the schedule's restarts have counted).
    let expired: Int64

    init(_ snapshot: RoomSnapshot, at now: Int64) {
        members = snapshot.members
        let schedule = snapshot.room.schedule
        let admittedPlaces = snapshot.admitted(at: now)
        waiting = max(0, snapshot.room.joined - admittedPlaces)
        // Places whose admission is over: those admitted more than admissionSeconds ago (places
        // up to `base` count from `baseAdmittedAt`), and those the schedule's restarts expired.
        let seconds = Int64(snapshot.settings?.admissionSeconds ?? WaitingRoomSettings.defaultAdmissionSeconds)
        let cutoff = now - seconds * 1000
        var over = schedule.expiredThrough
        if schedule.baseAdmittedAt <= cutoff { over = max(over, schedule.base) }
        if cutoff > (schedule.since ?? .max) { over = max(over, schedule.admitted(at: cutoff)) }
        expired = min(over, admittedPlaces)
        admitted = admittedPlaces - expired
    }
}

/// Random lower-case hex (the system's generator): a room's epoch and a draw's seed.
enum RandomHex {
    static func make(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(count * 2)
        var word: UInt64 = 0
        for index in 0..<count {
            if index % 8 == 0 { word = generator.next() }
            let byte = UInt8(truncatingIfNeeded: word >> (8 * UInt64(index % 8)))
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 15)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
