public import ReservationCore

/// Where a ticket stands (the contract's queue view states).
public enum QueueState: String, Sendable, CaseIterable {
    case prequeue
    case waiting
    case admitted
    case expired
    case soldOut = "sold_out"
    case closed
}

/// A ticket's view, decided from the ticket and a room snapshot alone: no I/O, so every gateway
/// answers a poll from its cached snapshot and they all agree.
public struct QueueView: Sendable, Equatable {
    public var state: QueueState
    public var position: Int64?
    public var estimatedWaitSeconds: Int64?
    public var refreshAfterSeconds: Int
    public var opensAtMilliseconds: Int64?
    public var admission: Admission?
    /// The ticket to hand back: the one asked about, with its place once the draw has fixed it.
    public var ticket: Ticket

    /// Decides the view of `ticket` at `now` (Redis ms, as extrapolated from the snapshot).
    /// The ticket is one this room signed (its epoch matches): the caller checked.
    public static func decide(_ ticket: Ticket, in snapshot: RoomSnapshot, at now: Int64) -> QueueView {
        let settings = snapshot.basket.settings
        let opens = settings.opensAtMilliseconds
        var view = QueueView(
            state: .waiting, position: nil, estimatedWaitSeconds: nil, refreshAfterSeconds: 30, opensAtMilliseconds: opens,
            admission: nil, ticket: ticket)
        if let closes = settings.closesAtMilliseconds, now >= closes {
            view.state = .closed
            return view
        }
        if snapshot.soldOut {
            view.state = .soldOut
            return view
        }
        let room = snapshot.room
        guard let preQueue = room.preQueue, let seed = room.seed else {
            view.state = .prequeue
            let untilOpen = opens.map { max(0, $0 - now) / 1000 } ?? 1
            view.refreshAfterSeconds = jittered(Double(untilOpen) / 4, ticket)
            return view
        }
        // The place: fixed in the ticket by an earlier poll of this same draw, else computed (and
        // handed back in the ticket, so the next poll does not compute it again).
        let tag = String(seed.prefix(16))
        var place = ticket.place
        if place < 1 || ticket.drawTag != tag {
            if ticket.join <= preQueue, let order = QueueOrder(seedHex: seed, count: preQueue) {
                place = order.place(ofJoin: ticket.join)
            } else {
                place = ticket.join
            }
            view.ticket.place = place
            view.ticket.drawTag = tag
        }
        let schedule = room.schedule
        // Never more than this snapshot handed out: a join it has not seen (a restart made on
        // another gateway) waits for a fresher snapshot rather than counting unclaimed places.
        let admitted = snapshot.admitted(at: now)
        if place > admitted {
            let position = place - admitted
            let wait = (position * 60 + schedule.perMinute - 1) / schedule.perMinute
            view.position = position
            view.estimatedWaitSeconds = wait
            // Soon enough never to miss the admission's window (at least 30 s long).
            let seconds = Double(snapshot.settings?.admissionSeconds ?? WaitingRoomSettings.defaultAdmissionSeconds)
            view.refreshAfterSeconds = jittered(min(Double(wait) / 8, seconds / 4), ticket)
            return view
        }
        let seconds = Int64(snapshot.settings?.admissionSeconds ?? WaitingRoomSettings.defaultAdmissionSeconds)
        guard let admittedAt = schedule.admittedAt(place: place), place > schedule.expiredThrough, now < admittedAt + seconds * 1000
        else {
            view.state = .expired
            return view
        }
        let expires = admittedAt + seconds * 1000
        view.state = .admitted
        view.admission = Admission(basketId: ticket.basketId, consumerId: ticket.consumerId, epoch: room.epoch, expiresAtMilliseconds: expires)
        view.refreshAfterSeconds = jittered(Double(expires - now) / 4000, ticket)
        return view
    }

    /// `seconds` within 1...30, spread ±20 % by the ticket's join number, so the clients that
    /// joined together (a pre-queue opening) do not poll together.
    static func jittered(_ seconds: Double, _ ticket: Ticket) -> Int {
        let spread = Double((UInt64(truncatingIfNeeded: ticket.join) &* 2_654_435_761) % 1000) / 1000
        let value = (min(max(seconds, 1), 30) * (0.8 + 0.4 * spread)).rounded()
        return Int(min(max(value, 1), 30))
    }
}
