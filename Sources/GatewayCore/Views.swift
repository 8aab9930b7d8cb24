import ReservationCore

/// The JSON bodies of the API, rendered from domain values.
extension BasketState {
    /// What `GET /v1/baskets/{id}` and the admin endpoints answer.
    func json(basketId: String) -> [UInt8] {
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
        writer.nullField("waitingRoom")
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
