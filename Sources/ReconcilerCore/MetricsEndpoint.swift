public import HTTPServing
public import NIOCore
import NIOHTTP1
public import Prometheus

/// `GET /metrics` (Prometheus text) and `GET /healthz` for `reconciler run`.
public struct MetricsEndpoint: HTTPResponder {
    let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    public var maxBodyBytes: Int { 1024 }
    public var payloadTooLarge: HTTPResponse { HTTPResponse(status: .payloadTooLarge, body: []) }
    public var requestHeaderTooLarge: HTTPResponse { HTTPResponse(status: .requestHeaderFieldsTooLarge, body: []) }
    public var malformedRequest: HTTPResponse { HTTPResponse(status: .badRequest, body: []) }

    public func respond(to request: HTTPRequest, on eventLoop: any EventLoop, _ completion: @escaping @Sendable (HTTPResponse) -> Void) {
        switch (request.method, request.uri) {
        case (.GET, "/metrics"):
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            completion(HTTPResponse(status: .ok, body: bytes, contentType: "text/plain; version=0.0.4; charset=utf-8"))
        case (.GET, "/healthz"):
            completion(HTTPResponse(status: .ok, body: Array(#"{"status":"ok"}"#.utf8)))
        default:
            completion(HTTPResponse(status: .notFound, body: Array(#"{"error":"not_found","message":"no such endpoint"}"#.utf8)))
        }
    }
}
