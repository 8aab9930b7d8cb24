public import Metrics
import NIOCore
public import ReservationScripts
import Synchronization

/// The gateway's metrics, created once through the factory it is given (Prometheus in the
/// executable). Counters per route and status are created on first use and cached, so a request
/// costs a dictionary lookup, not a factory call.
public final class GatewayMetrics: Sendable {
    private let factory: any MetricsFactory
    private let requestCounters = Mutex<[RequestKey: Counter]>([:])
    /// The hot routes' usual answers, created up front so counting them takes no lock.
    private let commonRequestCounters: [String: [Int: Counter]]
    private let reservationCounters: [ReservationOutcome: Counter]
    private let webhookCounters: [String: Counter]
    private let expired: Counter
    private let redisLatency: Timer
    /// 503 answers: Redis unreachable, or a basket out of service for a repair.
    private let unavailableAnswers: Counter
    /// Waiting rooms: joins, polls answered, and the views given by state.
    private let queueJoins: Counter
    private let queuePolls: Counter
    private let queueRefreshes: Counter
    private let queueViews: [QueueStateLabel: Counter]
    /// The last snapshot's counts of each room this gateway has read (one series per basket with a room).
    private let roomGauges = Mutex<[String: (members: Gauge, waiting: Gauge, admitted: Gauge, expired: Gauge)]>([:])

    /// The `state` label of `gateway_queue_views_total` (the queue view's states).
    public enum QueueStateLabel: String, CaseIterable, Sendable {
        case prequeue, waiting, admitted, expired
        case soldOut = "sold_out"
        case closed
    }

    struct RequestKey: Hashable {
        let route: String
        let status: Int
    }

    /// The `outcome` label of `gateway_reservations_total`.
    public enum ReservationOutcome: String, CaseIterable, Sendable {
        case granted
        case soldOut = "sold_out"
        case limitExceeded = "limit_exceeded"
        case rateLimited = "rate_limited"
        case basketNotFound = "basket_not_found"
        /// Anything else: invalid requests, reused idempotency keys, baskets under repair.
        case rejected
    }

    /// The `outcome` label of `gateway_webhooks_total`.
    public enum WebhookOutcome: Sendable, Hashable {
        case processed(PaymentOutcome)
        case duplicate
        case invalidSignature

        var label: String {
            switch self {
            case .processed(let outcome): return outcome.rawValue
            case .duplicate: return "duplicate"
            case .invalidSignature: return "invalid_signature"
            }
        }
    }

    public init(factory: any MetricsFactory) {
        self.factory = factory
        var reservations: [ReservationOutcome: Counter] = [:]
        for outcome in ReservationOutcome.allCases {
            reservations[outcome] = Counter(label: "gateway_reservations_total", dimensions: [("outcome", outcome.rawValue)], factory: factory)
        }
        self.reservationCounters = reservations
        var webhooks: [String: Counter] = [:]
        for outcome in PaymentOutcome.allCases.map(WebhookOutcome.processed) + [.duplicate, .invalidSignature] {
            webhooks[outcome.label] = Counter(label: "gateway_webhooks_total", dimensions: [("outcome", outcome.label)], factory: factory)
        }
        self.webhookCounters = webhooks
        var common: [String: [Int: Counter]] = [:]
        for (route, statuses) in [
            ("reserve", [201, 400, 404, 409, 422, 429, 503]), ("get_basket", [200, 404]),
            ("get_reservation", [200, 404]), ("webhook", [200, 400, 401]), ("queue_status", [200, 404]), ("join_queue", [200, 409]),
        ] {
            for status in statuses {
                common[route, default: [:]][status] = Counter(
                    label: "gateway_http_requests_total", dimensions: [("route", route), ("status", String(status))], factory: factory)
            }
        }
        self.commonRequestCounters = common
        self.expired = Counter(label: "gateway_holds_expired_total", factory: factory)
        self.redisLatency = Timer(label: "gateway_redis_call_duration_seconds", factory: factory)
        self.unavailableAnswers = Counter(label: "gateway_unavailable_total", factory: factory)
        self.queueJoins = Counter(label: "gateway_queue_joins_total", factory: factory)
        self.queuePolls = Counter(label: "gateway_queue_polls_total", factory: factory)
        self.queueRefreshes = Counter(label: "gateway_queue_room_reads_total", factory: factory)
        var views: [QueueStateLabel: Counter] = [:]
        for state in QueueStateLabel.allCases {
            views[state] = Counter(label: "gateway_queue_views_total", dimensions: [("state", state.rawValue)], factory: factory)
        }
        self.queueViews = views
    }

    func queueJoined() { queueJoins.increment() }
    func queuePolled() { queuePolls.increment() }
    /// A poll cache's refresh: one Redis call per basket per gateway per refresh.
    func queueRoomRead() { queueRefreshes.increment() }
    func queueView(_ state: QueueStateLabel) { queueViews[state]?.increment() }

    /// A room's counts as its last snapshot showed them.
    func room(_ basketId: String, members: Int64, waiting: Int64, admitted: Int64, expired: Int64) {
        typealias Gauges = (members: Gauge, waiting: Gauge, admitted: Gauge, expired: Gauge)
        let gauges: Gauges? = roomGauges.withLock { gauges -> Gauges? in
            if let known = gauges[basketId] { return known }
            // Bounded: a basket gets a series only once it has a room, which only the admin makes.
            guard gauges.count < 1000 else { return nil }
            func gauge(_ label: String) -> Gauge { Gauge(label: label, dimensions: [("basket", basketId)], factory: factory) }
            let made = (
                members: gauge("gateway_queue_members"), waiting: gauge("gateway_queue_waiting"), admitted: gauge("gateway_queue_admitted"),
                expired: gauge("gateway_queue_expired_admissions")
            )
            gauges[basketId] = made
            return made
        }
        guard let gauges else { return }
        gauges.members.record(members)
        gauges.waiting.record(waiting)
        gauges.admitted.record(admitted)
        gauges.expired.record(expired)
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

    func reservation(_ outcome: ReservationOutcome) { reservationCounters[outcome]?.increment() }

    func webhook(_ outcome: WebhookOutcome) { webhookCounters[outcome.label]?.increment() }

    func holdsExpired(_ count: Int) { expired.increment(by: count) }

    func redisCall(_ duration: TimeAmount) { redisLatency.recordNanoseconds(duration.nanoseconds) }

    func unavailable() { unavailableAnswers.increment() }
}
