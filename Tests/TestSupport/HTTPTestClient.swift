import Foundation
import NIOCore
public import NIOHTTP1
import NIOPosix
public import ReservationCore

public struct TestHTTPResponse: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    public let body: [UInt8]

    public var json: JSONValue? { try? JSONValue.parse(body) }
    public var text: String { String(decoding: body, as: UTF8.self) }
    public var errorCode: String? { json?["error"]?.stringValue }
}

/// A minimal HTTP/1.1 client for tests: one connection per request, so N concurrent calls are
/// N concurrent connections at the server.
public enum HTTPTestClient {
    public static func request(
        port: Int, method: HTTPMethod, path: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
        host: String = "127.0.0.1"
    ) async throws -> TestHTTPResponse {
        let group = TestEnvironment.eventLoopGroup
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: TestHTTPResponse.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(.seconds(60))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            promise.fail(error)  // never leave the promise behind
            throw error
        }
        var requestHeaders = HTTPHeaders()
        requestHeaders.add(name: "host", value: "\(host):\(port)")
        requestHeaders.add(name: "connection", value: "close")
        for (name, value) in headers { requestHeaders.add(name: name, value: value) }
        if let body { requestHeaders.add(name: "content-length", value: String(body.count)) }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: requestHeaders)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body {
            channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        // Generous: a bound on a hang, not a latency assertion (a loaded 2-core machine is slow).
        let timeout = eventLoop.scheduleTask(in: .seconds(120)) { promise.fail(ChannelError.connectTimeout(.seconds(120))) }
        defer { timeout.cancel() }
        let response = try await promise.futureResult.get()
        try? await channel.close()
        return response
    }

    public static func json(_ object: [String: JSONValueLiteral]) -> [UInt8] {
        Array(("{" + object.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value.rendered)" }.joined(separator: ",") + "}").utf8)
    }
}

/// Values for building small JSON bodies in tests.
public enum JSONValueLiteral: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case string(String)
    case int(Int)
    case raw(String)

    public static let null = JSONValueLiteral.raw("null")
    public static func bool(_ value: Bool) -> JSONValueLiteral { .raw(value ? "true" : "false") }

    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }

    var rendered: String {
        switch self {
        case .string(let text): return "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        case .int(let value): return String(value)
        case .raw(let text): return text
        }
    }
}

private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let promise: EventLoopPromise<TestHTTPResponse>
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []

    init(promise: EventLoopPromise<TestHTTPResponse>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let responseHead): head = responseHead
        case .body(let buffer): body.append(contentsOf: buffer.readableBytesView)
        case .end:
            guard let head else { return }
            promise.succeed(TestHTTPResponse(status: Int(head.status.code), headers: head.headers, body: body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ChannelError.inputClosed)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
