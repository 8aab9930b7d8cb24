import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A request as the HTTP layer hands it over: head plus the whole body (at most `maxBodyBytes`).
public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    public var uri: String
    public var headers: HTTPHeaders
    public var body: ByteBuffer?

    public init(method: HTTPMethod, uri: String, headers: HTTPHeaders, body: ByteBuffer?) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
    }
}

public struct HTTPResponse: Sendable {
    public var status: HTTPResponseStatus
    public var body: [UInt8]
    public var contentType: String
    public var extraHeaders: [(String, String)]
    /// Close the connection after this answer (`Connection: close`), e.g. after refusing a body
    /// or head too large to read.
    public var closeConnection: Bool

    public init(
        status: HTTPResponseStatus, body: [UInt8], contentType: String = "application/json", extraHeaders: [(String, String)] = [],
        closeConnection: Bool = false
    ) {
        self.status = status
        self.body = body
        self.contentType = contentType
        self.extraHeaders = extraHeaders
        self.closeConnection = closeConnection
    }
}

/// What answers requests. It is called on the connection's event loop and must call
/// `completion` exactly once, on that same loop.
public protocol HTTPResponder: Sendable {
    /// Bodies above this get 413 without being read further.
    var maxBodyBytes: Int { get }
    /// The answer to a body that is too large.
    var payloadTooLarge: HTTPResponse { get }
    func respond(to request: HTTPRequest, on eventLoop: EventLoop, _ completion: @escaping @Sendable (HTTPResponse) -> Void)
}

/// A small HTTP/1.1 server: SwiftNIO's HTTP codec and one handler, nothing between. A request
/// is parsed, answered by the responder on the connection's own event loop (the gateway's Redis
/// connection for that loop lives there too), and written back: no thread hop, no task per request.
public final class HTTPServer: Sendable {
    private let channel: Channel
    private let inFlight: InFlightCounter
    public let port: Int

    private init(channel: Channel, inFlight: InFlightCounter) {
        self.channel = channel
        self.inFlight = inFlight
        self.port = channel.localAddress?.port ?? 0
    }

    public static func start(responder: some HTTPResponder, group: EventLoopGroup, host: String, port: Int) async throws -> HTTPServer {
        let inFlight = InFlightCounter()
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 4096)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // Our response headers are fixed names and values we build ourselves, so the per-response
                    // header validator (about 9% of a reservation's CPU in a profile) is left out.
                    try sync.configureHTTPServerPipeline(withErrorHandling: true, withOutboundHeaderValidation: false)
                    try sync.addHandler(HTTPRequestHandler(responder: responder, inFlight: inFlight))
                }
            }
            .bind(host: host, port: port)
            .get()
        return HTTPServer(channel: channel, inFlight: inFlight)
    }

    /// Stops accepting, then waits (up to `grace`) for requests in flight to be answered.
    public func stop(grace: Duration = .seconds(10)) async {
        try? await channel.close()
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: grace)
        while inFlight.count > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

final class InFlightCounter: Sendable {
    private let value = Atomic<Int>(0)
    var count: Int { value.load(ordering: .relaxed) }
    func increment() { value.wrappingAdd(1, ordering: .relaxed) }
    func decrement() { value.wrappingSubtract(1, ordering: .relaxed) }
}

/// One per connection. Collects a request (refusing bodies over 16 KiB), hands it to the API,
/// writes the answer. NIO's pipelining handler keeps pipelined requests in order.
final class HTTPRequestHandler<Responder: HTTPResponder>: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let responder: Responder
    private let inFlight: InFlightCounter
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false

    init(responder: Responder, inFlight: InFlightCounter) {
        self.responder = responder
        self.inFlight = inFlight
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = nil
            if let length = requestHead.headers.first(name: "content-length").flatMap(Int.init), length > responder.maxBodyBytes {
                tooLarge = true
            } else {
                tooLarge = false
            }
        case .body(var chunk):
            guard !tooLarge else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > responder.maxBodyBytes {
                tooLarge = true
                body = nil
            } else if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
        case .end:
            guard let requestHead = head else { return }
            head = nil
            if tooLarge {
                // The rest of an oversized body is not read: answer and close the connection.
                write(responder.payloadTooLarge, for: requestHead, keepAlive: false, context: context)
                return
            }
            let request = HTTPRequest(method: requestHead.method, uri: requestHead.uri, headers: requestHead.headers, body: body)
            body = nil
            inFlight.increment()
            let keepAlive = requestHead.isKeepAlive
            // The answer arrives on this channel's event loop (the responder answers on the loop it
            // is given), so the handler and its context are only ever touched there.
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            responder.respond(to: request, on: context.eventLoop) { response in
                let (handler, context) = bound.value
                handler.inFlight.decrement()
                handler.write(response, for: requestHead, keepAlive: keepAlive && !response.closeConnection, context: context)
            }
        }
    }

    private func write(_ response: HTTPResponse, for request: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.reserveCapacity(4)
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: String(response.body.count))
        for (name, value) in response.extraHeaders { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "connection", value: "close") }
        let head = HTTPResponseHead(version: request.version, status: response.status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if request.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
