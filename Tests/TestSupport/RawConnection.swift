import Foundation
public import NIOCore
import NIOPosix
import Synchronization

/// A TCP connection that sends exactly the bytes it is given and keeps everything it receives:
/// for requests no HTTP library would write (half-sent heads, lying lengths, garbage), and for
/// holding thousands of connections open cheaply.
public final class RawConnection: Sendable {
    private let channel: any Channel
    private let received: Received

    final class Received: Sendable {
        let bytes = Mutex<[UInt8]>([])
        let closed = Atomic<Bool>(false)
    }

    private init(channel: any Channel, received: Received) {
        self.channel = channel
        self.received = received
    }

    /// `neverRead`: the connection never reads what the server sends (a client that floods
    /// without reading its answers), with a small receive buffer so the server sees it soon.
    public static func open(port: Int, host: String = "127.0.0.1", neverRead: Bool = false) async throws -> RawConnection {
        let received = Received()
        var bootstrap = ClientBootstrap(group: TestEnvironment.eventLoopGroup)
            .connectTimeout(.seconds(60))
            .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        if neverRead {
            bootstrap =
                bootstrap
                .channelOption(ChannelOptions.autoRead, value: false)
                .channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: 4096)
        }
        let channel =
            try await bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(received: received))
                }
            }
            .connect(host: host, port: port).get()
        return RawConnection(channel: channel, received: received)
    }

    /// Sends bytes; a send to a connection the server already closed fails quietly (`false`).
    @discardableResult
    public func send(_ bytes: [UInt8]) async -> Bool {
        do {
            try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
            return true
        } catch {
            return false
        }
    }

    public func send(_ text: String) async -> Bool { await send(Array(text.utf8)) }

    /// Queues `buffer` for sending and returns at once (a flood that the server may never
    /// take in whole). Buffers share storage, so many connections can queue the same one.
    public func sendWithoutWaiting(_ buffer: ByteBuffer) {
        channel.writeAndFlush(buffer, promise: nil)
    }

    /// With `neverRead`: the server closed the connection (a write failed, or it was reset).
    /// Such a connection learns of the close only by writing, so this asks the channel.
    public var isActive: Bool { channel.isActive }

    public var bytes: [UInt8] { received.bytes.withLock { $0 } }
    /// Forgets what was received so far (a long pipelined exchange counts its answers in rounds).
    public func dropReceived() { received.bytes.withLock { $0.removeAll() } }
    public var text: String { String(decoding: bytes, as: UTF8.self) }
    /// The server closed (or reset) the connection.
    public var isClosed: Bool { received.closed.load(ordering: .acquiring) }

    /// The status codes of every complete response received so far, in order.
    public var statuses: [Int] { RawHTTP.responses(in: bytes).map(\.status) }

    /// Waits (generously) until `count` complete responses arrived or the connection closed.
    public func responses(count: Int = 1) async throws -> [RawHTTP.Response] {
        _ = try await eventually(interval: .milliseconds(5)) {
            RawHTTP.responses(in: self.bytes).count >= count || self.isClosed
        }
        return RawHTTP.responses(in: bytes)
    }

    /// Waits until the server closed the connection; false if it did not within `timeout`.
    public func waitClosed(timeout: Duration = .seconds(120)) async throws -> Bool {
        try await eventually(timeout: timeout, interval: .milliseconds(20)) { self.isClosed }
    }

    public func close() async {
        try? await channel.close()
    }

    /// Shuts our sending side (the server sees end of input); replies can still arrive.
    public func shutdownOutput() async {
        try? await channel.close(mode: .output)
    }

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let received: Received

        init(received: Received) { self.received = received }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            received.bytes.withLock { $0.append(contentsOf: buffer.readableBytesView) }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed {
                received.closed.store(true, ordering: .releasing)
            }
            context.fireUserInboundEventTriggered(event)
        }

        func channelInactive(context: ChannelHandlerContext) {
            received.closed.store(true, ordering: .releasing)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            received.closed.store(true, ordering: .releasing)
            context.close(promise: nil)
        }
    }
}

/// Just enough HTTP/1.1 response parsing to check what a server sent.
public enum RawHTTP {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }

        public var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Every complete response (head and `content-length` body) at the start of `bytes`.
    public static func responses(in bytes: [UInt8]) -> [Response] {
        var result: [Response] = []
        var index = 0
        let separator: [UInt8] = [13, 10, 13, 10]
        while index < bytes.count {
            guard let end = find(separator, in: bytes, from: index) else { break }
            let head = String(decoding: bytes[index..<end], as: UTF8.self)
            let lines = head.components(separatedBy: "\r\n")
            let statusParts = lines[0].split(separator: " ")
            guard statusParts.count >= 2, let status = Int(statusParts[1]) else { break }
            var headers: [(String, String)] = []
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
            let length = headers.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) } ?? 0
            let bodyStart = end + 4
            guard bodyStart + length <= bytes.count else { break }
            result.append(Response(status: status, headers: headers, body: Array(bytes[bodyStart..<bodyStart + length])))
            index = bodyStart + length
        }
        return result
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var index = start
        while index + needle.count <= haystack.count {
            if haystack[index] == needle[0], Array(haystack[index..<index + needle.count]) == needle { return index }
            index += 1
        }
        return nil
    }
}
