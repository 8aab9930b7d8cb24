import Metrics
import NIOCore
import Synchronization

/// The gateway's metrics, created once through the factory it is given (Prometheus in the
/// executable). Counters per route and status are created on first use and cached, so a request
/// costs a dictionary lookup, not a factory call.
public final class GatewayMetrics: Sendable {
    private let factory: any MetricsFactory
    private let requestCounters = Mutex<[RequestKey: Counter]>([:])
    /// The hot routes' usual answers, created up front so counting them takes no lock.
    private let commonRequestCounters: [String: [Int: Counter]]
    private let reservationCounters: [String: Counter]
    private let webhookCounters = Mutex<[String: Counter]>([:])
    private let expired: Counter
    private let redisLatency: Timer
    /// 503 answers: Redis unreachable, or a basket out of service for a repair.
    private let unavailableAnswers: Counter

    struct RequestKey: Hashable {
        let route: String
        let status: Int
    }

    public static let reservationOutcomes = ["granted", "sold_out", "limit_exceeded", "rate_limited", "basket_not_found", "rejected"]

    public init(factory: any MetricsFactory) {
        self.factory = factory
        var reservations: [String: Counter] = [:]
        for outcome in Self.reservationOutcomes {
            reservations[outcome] = Counter(label: "gateway_reservations_total", dimensions: [("outcome", outcome)], factory: factory)
        }
        self.reservationCounters = reservations
        var common: [String: [Int: Counter]] = [:]
        for (route, statuses) in [("reserve", [201, 400, 404, 409, 422, 429, 503]), ("get_basket", [200, 404]),
                                  ("get_reservation", [200, 404]), ("webhook", [200, 400, 401])] {
            for status in statuses {
                common[route, default: [:]][status] = Counter(
                    label: "gateway_http_requests_total", dimensions: [("route", route), ("status", String(status))], factory: factory)
            }
        }
        self.commonRequestCounters = common
        self.expired = Counter(label: "gateway_holds_expired_total", factory: factory)
        self.redisLatency = Timer(label: "gateway_redis_call_duration_seconds", factory: factory)
        self.unavailableAnswers = Counter(label: "gateway_unavailable_total", factory: factory)
    }

    func request(route: String, status: Int) {
        if let counter = commonRequestCounters[route]?[status] {
            counter.increment()
            return
        }
        let key = RequestKey(route: route, status: status)
        let counter = requestCounters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: "gateway_http_requests_total", dimensions: [("route", route), ("status", String(status))], factory: factory)
            counters[key] = counter
            return counter
        }
        counter.increment()
    }

    func reservation(_ outcome: String) {
        (reservationCounters[outcome] ?? reservationCounters["rejected"])?.increment()
    }

    func webhook(_ outcome: String) {
        let counter = webhookCounters.withLock { counters in
            if let counter = counters[outcome] { return counter }
            let counter = Counter(label: "gateway_webhooks_total", dimensions: [("outcome", outcome)], factory: factory)
            counters[outcome] = counter
            return counter
        }
        counter.increment()
    }

    func holdsExpired(_ count: Int) { expired.increment(by: count) }

    func redisCall(_ duration: TimeAmount) { redisLatency.recordNanoseconds(duration.nanoseconds) }

    func unavailable() { unavailableAnswers.increment() }
}
