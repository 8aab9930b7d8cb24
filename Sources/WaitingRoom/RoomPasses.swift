import ConsumerTokens
public import ReservationCore

/// A waiting-room ticket: who joined which room, with which join number, and (once the pre-queue
/// is drawn) which place that number has, so a poll does not recompute the draw.
public struct Ticket: Sendable, Equatable {
    public var basketId: String
    public var consumerId: String
    public var epoch: String
    public var join: Int64
    /// 0 before the draw (a pre-queue join's place is not known yet).
    public var place: Int64
    public var expiresAtMilliseconds: Int64
    /// The draw `place` came from (the first 16 hex digits of its seed; "" for none): a place from
    /// another draw (the room drawn again) is computed afresh.
    public var drawTag: String

    public init(
        basketId: String, consumerId: String, epoch: String, join: Int64, place: Int64, expiresAtMilliseconds: Int64, drawTag: String = ""
    ) {
        self.basketId = basketId
        self.consumerId = consumerId
        self.epoch = epoch
        self.join = join
        self.place = place
        self.expiresAtMilliseconds = expiresAtMilliseconds
        self.drawTag = drawTag
    }
}

/// An admission: the consumer may reserve on the basket until it expires (Redis's clock decides,
/// in the reserve script, along with the room's epoch).
public struct Admission: Sendable, Equatable {
    public var basketId: String
    public var consumerId: String
    public var epoch: String
    public var expiresAtMilliseconds: Int64

    public init(basketId: String, consumerId: String, epoch: String, expiresAtMilliseconds: Int64) {
        self.basketId = basketId
        self.consumerId = consumerId
        self.epoch = epoch
        self.expiresAtMilliseconds = expiresAtMilliseconds
    }
}

/// Signs and checks tickets and admissions with `ADMISSION_SECRET` (HMAC-SHA256; a ticket and an
/// admission are told apart by their prefix, which the MAC covers, so neither passes for the
/// other). A pass is `<kind>.<base64url fields>.<base64url MAC>`: readable, not secret, and
/// worthless altered. Checking compares the MAC in constant time before any field is read.
public struct RoomPasses: Sendable {
    /// The key, keyed once (each use works on a copy of the keyed HMAC).
    private let hmac: HMACPrototype
    /// The longest pass looked at (two 128-byte ids and numbers, encoded: well under it).
    public static let maxLength = 1024

    public init(secret: [UInt8]) {
        hmac = HMACPrototype(secret: secret)
    }

    public func sign(_ ticket: Ticket) -> String {
        sign(
            kind: "t1",
            fields: [
                ticket.basketId, ticket.consumerId, ticket.epoch, String(ticket.join), String(ticket.place), String(ticket.expiresAtMilliseconds),
                ticket.drawTag,
            ])
    }

    public func sign(_ admission: Admission) -> String {
        sign(kind: "a1", fields: [admission.basketId, admission.consumerId, admission.epoch, String(admission.expiresAtMilliseconds)])
    }

    /// The ticket `text` signs, or nil (forged, altered, malformed). Expiry is the caller's to judge.
    public func ticket(_ text: String) -> Ticket? {
        guard let fields = verified(text, kind: "t1"), fields.count == 7, let join = Self.number(fields[3]), join >= 1,
            let place = Self.number(fields[4]), let expires = Self.number(fields[5]), fields[6].isEmpty || RoomRecord.isHex(fields[6], count: 16)
        else { return nil }
        return Ticket(
            basketId: fields[0], consumerId: fields[1], epoch: fields[2], join: join, place: place, expiresAtMilliseconds: expires,
            drawTag: fields[6])
    }

    public func admission(_ text: String) -> Admission? {
        guard let fields = verified(text, kind: "a1"), fields.count == 4, let expires = Self.number(fields[3]) else { return nil }
        return Admission(basketId: fields[0], consumerId: fields[1], epoch: fields[2], expiresAtMilliseconds: expires)
    }

    private func sign(kind: String, fields: [String]) -> String {
        let body = kind + "." + Base64URL.encodeString(Array(fields.joined(separator: "\n").utf8))
        return body + "." + Base64URL.encodeString(hmac.code(for: body.utf8))
    }

    private func verified(_ text: String, kind: String) -> [String]? {
        guard text.utf8.count <= Self.maxLength else { return nil }
        // On the string's own contiguous UTF-8 (a native string's is; a copy otherwise).
        if let fields = text.utf8.withContiguousStorageIfAvailable({ verified(bytes: $0, kind: kind) }) { return fields }
        return Array(text.utf8).withUnsafeBufferPointer { verified(bytes: $0, kind: kind) }
    }

    private func verified(bytes utf8: UnsafeBufferPointer<UInt8>, kind: String) -> [String]? {
        let kindBytes = kind.utf8.count
        guard let lastDot = utf8.lastIndex(of: UInt8(ascii: ".")), lastDot > kindBytes, utf8.starts(with: kind.utf8),
            utf8[kindBytes] == UInt8(ascii: ".")
        else { return nil }
        let body = UnsafeBufferPointer(rebasing: utf8[..<lastDot])
        // compared in constant time (HMACPrototype.isValid), before any field is read
        guard let mac = Base64URL.decode(buffer: UnsafeBufferPointer(rebasing: utf8[(lastDot + 1)...])), mac.count == 32,
            hmac.isValid(mac, for: UnsafeRawBufferPointer(body))
        else { return nil }
        // Signed by us: the fields are ours, still read strictly.
        guard let payload = Base64URL.decode(buffer: UnsafeBufferPointer(rebasing: body[(kindBytes + 1)...])) else { return nil }
        let fields = payload.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        guard fields.count >= 3, Identifier.isValid(fields[0]), Identifier.isValid(fields[1]), RoomRecord.isHex(fields[2], count: 32)
        else { return nil }
        return fields
    }

    /// Digits only, at most 15 of them (no sign, no overflow).
    static func number(_ text: String) -> Int64? { Digits.decimal(text) }
}
