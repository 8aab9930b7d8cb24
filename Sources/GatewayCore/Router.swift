public import NIOHTTP1
import ReservationCore

/// What a request asks for, decided from its method and target alone: no I/O, no allocation
/// beyond the path segments, total over every input (the fuzz target feeds it arbitrary bytes).
public enum Endpoint: Equatable, Sendable {
    case health, ready, metrics, openapi
    case createBasket(basketId: String)
    case getBasket(basketId: String)
    case updateBasket(basketId: String)
    case adjustStock(basketId: String)
    case reserve(basketId: String)
    case getReservation(reservationId: String)
    case cancelReservation(reservationId: String)
    case webhook
    case joinQueue(basketId: String)
    case queueStatus(basketId: String, ticket: String)
    case queuePage(basketId: String)

    /// The `route` label of the request metrics (a fixed set: never a value from the request).
    public var label: String {
        switch self {
        case .health: return "health"
        case .ready: return "ready"
        case .metrics: return "metrics"
        case .openapi: return "openapi"
        case .createBasket: return "put_basket"
        case .getBasket: return "get_basket"
        case .updateBasket: return "patch_basket"
        case .adjustStock: return "adjust_stock"
        case .reserve: return "reserve"
        case .getReservation: return "get_reservation"
        case .cancelReservation: return "cancel_reservation"
        case .webhook: return "webhook"
        case .joinQueue: return "join_queue"
        case .queueStatus: return "queue_status"
        case .queuePage: return "queue_page"
        }
    }
}

public enum Router {
    /// The longest request target looked at; anything longer is not a path of ours (404), and a
    /// head that long is refused earlier by the server's head limit anyway.
    static let maxTargetBytes = 1024

    /// The endpoint `method` and `target` name, or the error to answer (404 `not_found`, 405
    /// `method_not_allowed` with what the path allows). Ids are returned as they appear in the
    /// path; their format is checked by the endpoint (400 `invalid_request`).
    public static func route(method: HTTPMethod, target: String) -> Result<Endpoint, APIError> {
        guard target.utf8.count <= maxTargetBytes, target.utf8.first == UInt8(ascii: "/") else { return .failure(.notFound) }
        // Bytes, not Characters: the path's separators are ASCII, and grapheme breaking was a
        // visible share of every request's CPU.
        let segments = pathSegments(target)

        func get(_ endpoint: Endpoint) -> Result<Endpoint, APIError> {
            method == .GET || method == .HEAD ? .success(endpoint) : .failure(.methodNotAllowed(allowed: "GET, HEAD"))
        }
        func post(_ endpoint: Endpoint) -> Result<Endpoint, APIError> {
            method == .POST ? .success(endpoint) : .failure(.methodNotAllowed(allowed: "POST"))
        }

        switch segments.count {
        case 1:
            switch segments[0] {
            case "healthz": return get(.health)
            case "readyz": return get(.ready)
            case "metrics": return get(.metrics)
            case "openapi.yaml": return get(.openapi)
            default: return .failure(.notFound)
            }
        case 2 where segments[0] == "queue":
            return get(.queuePage(basketId: percentDecoded(segments[1])))
        case 3 where segments[0] == "v1":
            let id = percentDecoded(segments[2])
            switch segments[1] {
            case "baskets":
                switch method {
                case .PUT: return .success(.createBasket(basketId: id))
                case .GET, .HEAD: return .success(.getBasket(basketId: id))
                case .PATCH: return .success(.updateBasket(basketId: id))
                default: return .failure(.methodNotAllowed(allowed: "GET, HEAD, PUT, PATCH"))
                }
            case "reservations":
                switch method {
                case .GET, .HEAD: return .success(.getReservation(reservationId: id))
                case .DELETE: return .success(.cancelReservation(reservationId: id))
                default: return .failure(.methodNotAllowed(allowed: "GET, HEAD, DELETE"))
                }
            case "webhooks" where segments[2] == "payments":
                return post(.webhook)
            default:
                return .failure(.notFound)
            }
        case 4 where segments[0] == "v1" && segments[1] == "baskets":
            let basketId = percentDecoded(segments[2])
            switch segments[3] {
            case "stock-adjustments": return post(.adjustStock(basketId: basketId))
            case "reservations": return post(.reserve(basketId: basketId))
            case "queue": return post(.joinQueue(basketId: basketId))
            default: return .failure(.notFound)
            }
        case 5 where segments[0] == "v1" && segments[1] == "baskets" && segments[3] == "queue":
            // A ticket is base64url and dots: no escapes to decode, and any other byte fails its check.
            return get(.queueStatus(basketId: percentDecoded(segments[2]), ticket: String(segments[4])))
        default:
            return .failure(.notFound)
        }
    }

    /// The segments after the leading `/` up to the first `?` or `#`, at most 5 (the last keeps
    /// any further `/`): one pass over the contiguous UTF-8 finds the separators (walking
    /// `String.UTF8View`'s indices cost a visible share of a poll, whose target holds a 300-byte
    /// ticket), then one array, sized up front.
    private static func pathSegments(_ target: String) -> [Substring] {
        var target = target
        // The separators' offsets, then the end (on the stack; not `InlineArray`: the package
        // builds with Swift 6.0 and for macOS 14).
        return withUnsafeTemporaryAllocation(of: Int.self, capacity: 5) { bounds in
            var separators = 0
            target.withUTF8 { bytes in
                var index = 1
                while index < bytes.count {
                    let byte = bytes[index]
                    if byte == UInt8(ascii: "?") || byte == UInt8(ascii: "#") { break }
                    if byte == UInt8(ascii: "/") && separators < 4 {
                        bounds.initializeElement(at: separators, to: index)
                        separators += 1
                    }
                    index += 1
                }
                bounds.initializeElement(at: separators, to: index)
            }
            let utf8 = target.utf8
            var segments: [Substring] = []
            segments.reserveCapacity(separators + 1)
            var start = utf8.index(after: utf8.startIndex)
            for position in 0...separators {
                let stop = utf8.index(utf8.startIndex, offsetBy: bounds[position])
                segments.append(target[start..<stop])
                if stop < utf8.endIndex { start = utf8.index(after: stop) }
            }
            return segments
        }
    }

    /// A path segment with its `%XX` escapes decoded (a client's URL library writes `:` and `@`
    /// of an id as `%3A` and `%40`). A malformed escape is left as it is, and the id check that
    /// follows refuses it; decoded bytes that are not UTF-8 become U+FFFD, which it refuses too.
    static func percentDecoded(_ segment: Substring) -> String {
        guard segment.utf8.contains(UInt8(ascii: "%")) else { return String(segment) }
        let utf8 = Array(segment.utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var index = 0
        while index < utf8.count {
            if utf8[index] == UInt8(ascii: "%"), index + 2 < utf8.count,
                let high = Digits.hexValue(utf8[index + 1]), let low = Digits.hexValue(utf8[index + 2])
            {
                bytes.append(high << 4 | low)
                index += 3
            } else {
                bytes.append(utf8[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
