public import NIOCore
public import NIOHTTP1
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
    // Every change drops the prepared wire form, so it can never disagree with the fields.
    public var status: HTTPResponseStatus { didSet { wireForm = nil } }
    public var body: [UInt8] { didSet { wireForm = nil } }
    public var contentType: String { didSet { wireForm = nil } }
    public var extraHeaders: [(String, String)] { didSet { wireForm = nil } }
    /// Close the connection after this answer (`Connection: close`), e.g. after refusing a body
    /// or head too large to read.
    public var closeConnection: Bool { didSet { wireForm = nil } }
    /// The answer's bytes for the usual case (HTTP/1.1, keep-alive, with its body), encoded once
    /// by `prepared()`: an answer sent by the thousand (sold out) is then one shared buffer on
    /// the wire, not an encoding and an allocation each time.
    private(set) var wireForm: ByteBuffer?

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

    /// This answer with its usual wire form encoded once (see `wireForm`).
    public func prepared() -> HTTPResponse {
        var copy = self
        copy.wireForm = wire(version: .http1_1, keepAlive: true, withBody: true, allocator: ByteBufferAllocator())
        return copy
    }

    /// The bytes for a request of `version` (and method HEAD or not): the prepared wire form when
    /// it fits, else encoded now.
    func wire(version: HTTPVersion, keepAlive: Bool, withBody: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        if let wireForm, keepAlive, withBody, version == .http1_1 { return wireForm }
        var buffer = allocator.buffer(capacity: 160 + body.count)
        encode(into: &buffer, version: version, keepAlive: keepAlive, withBody: withBody)
        return buffer
    }

    /// The whole answer as bytes on the wire: status line, headers (`content-length` always, so
    /// no chunked encoding), and the body unless the request was HEAD. The header names and
    /// values are ours, never a client's, so nothing needs validating.
    func encode(into buffer: inout ByteBuffer, version: HTTPVersion, keepAlive: Bool, withBody: Bool) {
        let isHTTP10 = version.major == 1 && version.minor == 0
        buffer.writeStaticString(isHTTP10 ? "HTTP/1.0 " : "HTTP/1.1 ")
        buffer.writeString(String(status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\ncontent-type: ")
        buffer.writeString(contentType)
        buffer.writeStaticString("\r\ncontent-length: ")
        buffer.writeString(String(body.count))
        for (name, value) in extraHeaders {
            buffer.writeStaticString("\r\n")
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
        }
        if !keepAlive {
            buffer.writeStaticString("\r\nconnection: close")
        } else if isHTTP10 {
            buffer.writeStaticString("\r\nconnection: keep-alive")
        }
        buffer.writeStaticString("\r\n\r\n")
        if withBody { buffer.writeBytes(body) }
    }
}

/// What answers requests. It is called on the connection's event loop and must call
/// `completion` exactly once, on that same loop.
public protocol HTTPResponder: Sendable {
    /// Bodies above this get 413 without being read further.
    var maxBodyBytes: Int { get }
    /// The answer to a body that is too large (413).
    var payloadTooLarge: HTTPResponse { get }
    /// The answer to a request head over `HTTPServerLimits.maxHeadBytes` (431).
    var requestHeaderTooLarge: HTTPResponse { get }
    /// The answer to bytes that are not HTTP/1.1 (400).
    var malformedRequest: HTTPResponse { get }
    func respond(to request: HTTPRequest, on eventLoop: any EventLoop, _ completion: @escaping @Sendable (HTTPResponse) -> Void)
}

/// The limits that keep slow, idle, huge or numerous clients from taking the server down. Every
/// one is a setting of the gateway (README, "Security and limits").
public struct HTTPServerLimits: Sendable, Equatable {
    /// Open connections beyond this are closed as soon as they are accepted, so the ones already
    /// admitted keep their latency. `GATEWAY_MAX_CONNECTIONS`, default 10,000.
    public var maxConnections = 10_000
    /// The request line and headers may take at most this many bytes (431 beyond).
    /// `GATEWAY_MAX_HEAD_BYTES`, default 16 KiB.
    public var maxHeadBytes = 16 * 1024
    /// Once a request's first byte arrived, the whole request (head and body) must arrive within
    /// this; slower clients are closed. `GATEWAY_REQUEST_TIMEOUT_MS`, default 10 s.
    public var requestTimeout: Duration = .seconds(10)
    /// A connection with no request under way is closed after this. `GATEWAY_IDLE_TIMEOUT_MS`,
    /// default 60 s.
    public var idleTimeout: Duration = .seconds(60)
    /// On stop, requests already received get this long to be answered before their
    /// connections are closed anyway. `GATEWAY_SHUTDOWN_GRACE_MS`, default 10 s.
    public var shutdownGrace: Duration = .seconds(10)
    /// On stop, how long an open keep-alive connection may still bring a request (answered,
    /// with `Connection: close`) before idle connections are closed: a client's next request may
    /// already be on the wire when the stop begins. At most `shutdownGrace`.
    /// `GATEWAY_DRAIN_MS`, default 1 s.
    public var drainWindow: Duration = .seconds(1)
    /// Answers a client has not taken wait in the connection's outbound buffer up to this many
    /// bytes; past it the connection takes no more requests, and if it stays past it for the
    /// request timeout it is closed. Default 16 KiB (answers are a few hundred bytes).
    public var outboundHighWaterMark = 16 * 1024

    public init() {}
}

/// Counts of the server's connections, read by the metrics page.
public final class HTTPServerStatistics: Sendable {
    private let open = Atomic<Int>(0)
    private let refused = Atomic<Int>(0)
    private let timedOut = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)

    public init() {}

    /// A stop has begun: from this instant every answer carries `Connection: close` (read by
    /// each write, so no connection answers keep-alive while its stop notice is on its way).
    var isStopping: Bool { stopping.load(ordering: .relaxed) }
    func beginStop() { stopping.store(true, ordering: .relaxed) }

    public var openConnections: Int { open.load(ordering: .relaxed) }
    public var refusedConnections: Int { refused.load(ordering: .relaxed) }
    public var timedOutConnections: Int { timedOut.load(ordering: .relaxed) }

    func admit(limit: Int) -> Bool {
        let (_, admitted) = open.wrappingAdd(1, ordering: .relaxed)
        guard admitted > limit else { return true }
        open.wrappingSubtract(1, ordering: .relaxed)
        refused.wrappingAdd(1, ordering: .relaxed)
        return false
    }

    func closed() { open.wrappingSubtract(1, ordering: .relaxed) }
    func timedOutOne() { timedOut.wrappingAdd(1, ordering: .relaxed) }
}

/// A small HTTP/1.1 server: SwiftNIO's HTTP codec and our handlers, nothing between. A request
/// is parsed, answered by the responder on the connection's own event loop (the gateway's Redis
/// connection for that loop lives there too), and written back: no thread hop, no task per request.
public final class HTTPServer: Sendable {
    private let channel: any Channel
    private let connections: ConnectionRegistry
    public let statistics: HTTPServerStatistics
    private let limits: HTTPServerLimits
    public let port: Int

    private init(channel: any Channel, connections: ConnectionRegistry, statistics: HTTPServerStatistics, limits: HTTPServerLimits) {
        self.channel = channel
        self.connections = connections
        self.statistics = statistics
        self.limits = limits
        self.port = channel.localAddress?.port ?? 0
    }

    public static func start(
        responder: some HTTPResponder, group: any EventLoopGroup, host: String, port: Int,
        limits: HTTPServerLimits = HTTPServerLimits(), statistics: HTTPServerStatistics = HTTPServerStatistics()
    ) async throws -> HTTPServer {
        let connections = ConnectionRegistry()
        // NIO's own header limits stay above ours: our guard answers 431 first, theirs is a backstop.
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderFieldSize = max(limits.maxHeadBytes * 2, 1024)
        decoderLimits.maxHeaderListSize = max(limits.maxHeadBytes * 2, 1024)
        decoderLimits.maxHeaderFieldCount = 1_000
        let headerLimits = decoderLimits  // (a constant for the child channels' initializer)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 4096)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            // Accepted connections inherit it: what a client can make the kernel hold for a
            // connection that is paused (a request is at most 16 KiB of head and 16 KiB of body).
            .serverChannelOption(ChannelOptions.socketOption(.so_rcvbuf), value: 32 * 1024)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            // What one read loop can bring in is what a paused connection may hold undecoded
            // (`RequestGuard`): 4 reads of at most 8 KiB. A request is far smaller, so the
            // common case is one read of one request either way.
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 4)
            .childChannelOption(
                ChannelOptions.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 8192)
            )
            // Answers a client does not read wait in our outbound buffer up to this mark; past
            // it the connection stops taking requests (and is closed after the request timeout).
            // The kernel's send buffer is fixed too (autotuning would let it grow to 4 MiB): a
            // client that never reads is noticed after a few hundred answers, not tens of
            // thousands, and costs the machine a bounded amount. Answers are a few hundred bytes.
            .childChannelOption(
                ChannelOptions.writeBufferWaterMark, value: .init(low: limits.outboundHighWaterMark / 4, high: limits.outboundHighWaterMark)
            )
            .childChannelOption(ChannelOptions.socketOption(.so_sndbuf), value: 16 * 1024)
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                guard statistics.admit(limit: limits.maxConnections) else {
                    // Over the limit: closed at once, before any byte is read or any state is kept.
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in
                    statistics.closed()
                    connections.remove(channel)
                }
                return channel.eventLoop.makeCompletedFuture {
                    let state = ConnectionState(limits: limits, statistics: statistics, refusal: responder.requestHeaderTooLarge)
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(RequestGuard(state: state))
                    try sync.addHandler(
                        ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: headerLimits)))
                    // Answers are encoded by the handler itself (one buffer, one write), and it
                    // keeps pipelined requests in order: no response encoder, no pipelining handler.
                    try sync.addHandler(HTTPRequestHandler(responder: responder, state: state))
                    connections.add(channel)
                }
            }
            .bind(host: host, port: port)
            .get()
        return HTTPServer(channel: channel, connections: connections, statistics: statistics, limits: limits)
    }

    /// A graceful stop, drained rather than cut (as Envoy does): no new connections; from the
    /// signal on every answer says `Connection: close` and its connection closes after it; a
    /// request that arrives on an open connection within `limits.drainWindow` is still answered so;
    /// then idle connections are closed, busy ones after their answer; after
    /// `limits.shutdownGrace` whatever is still open is closed anyway.
    public func stop() async {
        statistics.beginStop()
        try? await channel.close()
        let clock = ContinuousClock()
        let started = clock.now
        let deadline = started.advanced(by: limits.shutdownGrace)
        let drainEnd = started.advanced(by: min(limits.drainWindow, limits.shutdownGrace))
        while statistics.openConnections > 0, clock.now < drainEnd {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for connection in connections.all() {
            connection.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        while statistics.openConnections > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for connection in connections.all() { connection.close(promise: nil) }
    }
}

/// The open connections, so a stop can reach each one.
final class ConnectionRegistry: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) { channels.withLock { $0[ObjectIdentifier(channel)] = channel } }
    func remove(_ channel: any Channel) { _ = channels.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) } }
    func all() -> [any Channel] { channels.withLock { Array($0.values) } }
}
