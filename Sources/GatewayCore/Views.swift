import ReservationCore
import WaitingRoom

/// The JSON bodies of the API, rendered from domain values.
extension BasketState {
    /// What `GET /v1/baskets/{id}` and the admin endpoints answer.
    /// `room`: the waiting room's snapshot, for its counts and draw (nil: settings only).
    func json(basketId: String, room: RoomSnapshot? = nil) -> [UInt8] {
        var writer = JSONWriter()
        writer.field("basketId", basketId)
        writer.field("stock", stock)
        writer.field("pending", pending)
        writer.field("confirmed", confirmed)
        writer.field("capacity", capacity)
        writer.field("holdSeconds", holdSeconds)
        writer.field("maxPerConsumer", maxPerConsumer)
        writer.field("opensAt", settings.opensAtMilliseconds.map { RFC3339.format(milliseconds: $0) })
        writer.field("closesAt", settings.closesAtMilliseconds.map { RFC3339.format(milliseconds: $0) })
        writer.field("paused", settings.paused)
        if let waitingRoom = settings.waitingRoom {
            var inner = JSONWriter(capacity: 256)
            inner.field("admitPerMinute", waitingRoom.admitPerMinute)
            inner.field("admissionSeconds", waitingRoom.admissionSeconds)
            let counts = room.map { RoomCounts($0, at: $0.observedAtMilliseconds) }
            inner.field("members", counts.map { Int($0.members) })
            inner.field("waiting", counts.map { Int($0.waiting) })
            inner.field("admitted", counts.map { Int($0.admitted) })
            inner.field("expiredAdmissions", counts.map { Int($0.expired) })
            // The draw, published once made (before it there is nothing to know).
            inner.field("preQueue", room?.room.preQueue.map { Int($0) })
            inner.field("seed", room?.room.seed)
            inner.field("drawnAt", room?.room.drawnAtMilliseconds.map { RFC3339.format(milliseconds: $0) })
            writer.rawField("waitingRoom", inner.finish())
        } else {
            writer.nullField("waitingRoom")
        }
        // By Redis's clock as the script that read it saw it (the clock reservations are decided by).
        writer.field("state", settings.state(at: observedAtMilliseconds ?? WallClock.nowMilliseconds()).rawValue)
        return writer.finish()
    }
}

extension ReservationRecord {
    /// A reservation as `GET` and `DELETE /v1/reservations/{id}` show it.
    func json(reservationId: String) -> [UInt8] {
        var writer = JSONWriter()
        writer.field("reservationId", reservationId)
        writer.field("basketId", basketId)
        writer.field("consumerId", consumerId)
        writer.field("quantity", quantity)
        writer.field("status", status.rawValue)
        writer.field("expiresAt", RFC3339.format(milliseconds: expiresAtMilliseconds))
        writer.field("paymentId", paymentId)
        return writer.finish()
    }
}

extension SignedQueueView {
    /// What the queue endpoints answer (contract: the queue view).
    func json() -> [UInt8] {
        var writer = JSONWriter(capacity: 512)
        writer.field("ticket", ticket)
        writer.field("basketId", view.ticket.basketId)
        writer.field("state", view.state.rawValue)
        writer.field("position", view.position.map { Int($0) })
        writer.field("estimatedWaitSeconds", view.estimatedWaitSeconds.map { Int($0) })
        writer.field("refreshAfterSeconds", view.refreshAfterSeconds)
        writer.field("opensAt", view.opensAtMilliseconds.map { RFC3339.format(milliseconds: $0) })
        writer.field("admissionToken", admissionToken)
        writer.field("admissionExpiresAt", view.admission.map { RFC3339.format(milliseconds: $0.expiresAtMilliseconds) })
        return writer.finish()
    }
}
