// libFuzzer target: arbitrary bytes become an HTTP request (method, target, headers, body) and go
// through `RequestDecoder`, everything the gateway does with a request before any I/O: routing,
// percent-decoding, the admin token, the webhook signature (with hostile timestamps), the
// Idempotency-Key, JSON bodies, ids and number ranges. A trap (overflow, bad index) is a crash
// libFuzzer reports; a decoded command that breaks the API's rules is a crash too.
//
// Built by scripts/fuzz.sh with RESERVATION_FUZZ_BUILD=1 (libFuzzer supplies `main`); in an ordinary
// build Replay.swift adds one: `RequestFuzzer <file>...` runs each file through the same checks.
import ConsumerTokens
import GatewayCore
import HTTPServing
import NIOCore
import NIOHTTP1
import ReservationCore
import ReservationScripts
import WaitingRoom

let passes = RoomPasses(secret: Array("fuzz-admission-secret".utf8))
let decoder = RequestDecoder(adminToken: "fuzz-admin", webhookSecret: "fuzz-secret", defaultHoldSeconds: 600)
/// The same in token mode (one HS256 key): every consumer request first needs a valid token.
let tokenDecoder = RequestDecoder(
    adminToken: "fuzz-admin", webhookSecret: "fuzz-secret", defaultHoldSeconds: 600,
    consumers: .token(
        ConsumerTokenVerifier(
            keys: try! ConsumerTokenKeys(hs256: "fuzz:" + String(repeating: "A", count: 43), jwksJSON: nil), cacheCapacity: 0)))

/// Input layout: line 1 is "METHOD target", then header lines until an empty line, then the body.
/// Anything goes: missing parts are simply absent.
func request(from bytes: [UInt8]) -> HTTPRequest {
    var lines: [ArraySlice<UInt8>] = []
    var start = 0
    var bodyStart = bytes.count
    var index = 0
    while index < bytes.count {
        if bytes[index] == 10 {
            let line = bytes[start..<index]
            if line.isEmpty || line == [13] {
                bodyStart = index + 1
                break
            }
            lines.append(line)
            start = index + 1
        }
        index += 1
    }
    if bodyStart == bytes.count, start < bytes.count, index >= bytes.count { lines.append(bytes[start...]) }
    let requestLine = lines.first.map { String(decoding: $0, as: UTF8.self) } ?? ""
    let parts = requestLine.split(separator: " ", maxSplits: 1)
    let method = HTTPMethod(rawValue: parts.first.map(String.init) ?? "GET")
    let target = parts.count > 1 ? String(parts[1]).trimmingSuffix("\r") : "/"
    var headers = HTTPHeaders()
    for line in lines.dropFirst() {
        let text = String(decoding: line, as: UTF8.self)
        guard let colon = text.firstIndex(of: ":") else { continue }
        let name = String(text[..<colon])
        let value = String(text[text.index(after: colon)...]).trimmingPrefix(" ").trimmingSuffix("\r")
        // Only what NIO's HTTP parser can deliver: a token for a name, no CR, LF or NUL in a value.
        guard !name.isEmpty, name.utf8.allSatisfy(isTokenByte), !value.utf8.contains(where: { $0 == 0 || $0 == 10 || $0 == 13 }) else { continue }
        headers.add(name: name, value: value)
    }
    let body: ByteBuffer? = bodyStart < bytes.count ? ByteBuffer(bytes: bytes[bodyStart...]) : nil
    return HTTPRequest(method: method, uri: target, headers: headers, body: body)
}

func check(_ bytes: [UInt8]) {
    let request = request(from: bytes)
    for (decoder, now): (RequestDecoder, Int64) in [
        (decoder, 0), (decoder, 1_795_000_000), (decoder, .max), (decoder, .min), (tokenDecoder, 1_795_000_000),
    ] {
        let (_, result) = decoder.decode(request, now: now)
        guard case .success(let command) = result else { continue }
        // What the decoder lets through must satisfy the API's own rules.
        switch command {
        case .createBasket(let basketId, let stock, let settings):
            precondition(Identifier.isValid(basketId) && (0...RequestDecoder.maxUnits).contains(stock))
            precondition((1...86_400).contains(settings.holdSeconds) && settings.maxPerConsumer >= 1)
            checkWindow(settings.opensAtMilliseconds, settings.closesAtMilliseconds)
        case .updateBasket(let basketId, let change):
            precondition(Identifier.isValid(basketId))
            if let hold = change.holdSeconds { precondition((1...86_400).contains(hold)) }
            if let max = change.maxPerConsumer { precondition(max >= 1) }
            checkWindow(change.opensAtMilliseconds ?? nil, change.closesAtMilliseconds ?? nil)
        case .adjustStock(let basketId, let delta):
            precondition(Identifier.isValid(basketId) && delta != 0 && delta.magnitude <= RequestDecoder.maxUnits.magnitude)
        case .reserve(let reserve):
            precondition(Identifier.isValid(reserve.basketId) && Identifier.isValid(reserve.consumerId))
            precondition((1...RequestDecoder.maxUnits).contains(reserve.quantity))
            if let key = reserve.idempotencyKey { precondition(Identifier.isValidKey(key)) }
            if let admission = reserve.admissionToken { precondition(admission.utf8.count <= RoomPasses.maxLength) }
        case .joinQueue(let basketId, let consumerId):
            precondition(Identifier.isValid(basketId) && Identifier.isValid(consumerId))
        case .queueStatus(let basketId, _, let consumerId):
            precondition(Identifier.isValid(basketId) && (consumerId.map(Identifier.isValid) ?? true))
        case .getBasket(let id), .getReservation(let id, _), .cancelReservation(let id, _):
            precondition(Identifier.isValid(id))
        case .payment(let event):
            precondition(Identifier.isValid(event.reservationId) && Identifier.isValidKey(event.eventId) && event.amountCents >= 0)
        case .health, .ready, .metrics, .openapi, .queuePage:
            break
        }
    }
    // Waiting-room passes: arbitrary text is refused without a trap, and what verifies is whole.
    let text = String(decoding: bytes.prefix(1200), as: UTF8.self)
    if let ticket = passes.ticket(text) { precondition(ticket.join >= 1 && Identifier.isValid(ticket.basketId)) }
    if let admission = passes.admission(text) { precondition(Identifier.isValid(admission.consumerId)) }
    // The JSON reader on the raw bytes too, and the sold-out arithmetic's inputs.
    _ = try? JSONValue.parse(bytes)
    if let time = RFC3339.parse(String(decoding: bytes.prefix(48), as: UTF8.self)) {
        precondition(time >= 0 && time <= 253_402_300_799_999)
    }
    _ = ReservationIdGenerator.partition(of: String(decoding: bytes.prefix(200), as: UTF8.self))
}

/// A sale window the decoder lets through: times within the years 1970 to 9999, closing after opening.
func checkWindow(_ opens: Int64?, _ closes: Int64?) {
    for time in [opens, closes].compactMap({ $0 }) { precondition((0...BasketSettings.latestMilliseconds).contains(time)) }
    if let opens, let closes { precondition(closes > opens) }
}

/// RFC 9110 tchar.
func isTokenByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    default:
        return Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
    func trimmingPrefix(_ prefix: String) -> String { hasPrefix(prefix) ? String(dropFirst(prefix.count)) : self }
}

/// libFuzzer's entry point (libFuzzer's own `main` calls it; in ordinary builds `Replay` does).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    check(start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [])
    return 0
}
