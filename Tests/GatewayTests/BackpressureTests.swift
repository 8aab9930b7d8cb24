import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

@testable import HTTPServing

/// The connection's backpressure without a socket (NIO's EmbeddedChannel): a client that
/// pipelines far ahead is read only a few requests ahead of its answers, nothing it sent is lost
/// or reordered across a pause, and the common case never stops reading.
@Suite("Connection backpressure")
struct BackpressureTests {
    /// Answers only when told to, in order: the test decides when each answer comes.
    final class HeldResponder: HTTPResponder {
        let maxBodyBytes = 16 * 1024
        let payloadTooLarge = HTTPResponse(status: .payloadTooLarge, body: [])
        let requestHeaderTooLarge = HTTPResponse(status: .requestHeaderFieldsTooLarge, body: [])
        let malformedRequest = HTTPResponse(status: .badRequest, body: [])
        let held = Mutex<[(String, @Sendable (HTTPResponse) -> Void)]>([])
        let received = Mutex<[String]>([])

        func respond(to request: HTTPRequest, on eventLoop: any EventLoop, _ completion: @escaping @Sendable (HTTPResponse) -> Void) {
            received.withLock { $0.append(request.uri) }
            held.withLock { $0.append((request.uri, completion)) }
        }

        /// Answers the oldest held request with its own URI as the body.
        func answerOne() -> Bool {
            guard let (uri, completion) = held.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { return false }
            completion(HTTPResponse(status: .ok, body: Array(uri.utf8)))
            return true
        }
    }

    /// Counts the reads the pipeline asks the socket for.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    /// Counts the request heads the decoder produced.
    final class HeadCounter: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart
        var heads = 0
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head = unwrapInboundIn(data) { heads += 1 }
            context.fireChannelRead(data)
        }
    }

    static func pipeline(_ responder: HeldResponder, heads: HeadCounter = HeadCounter(), statistics: HTTPServerStatistics = HTTPServerStatistics())
        throws -> (EmbeddedChannel, ConnectionState, ReadCounter)
    {
        let channel = EmbeddedChannel()
        let state = ConnectionState(limits: HTTPServerLimits(), statistics: statistics, refusal: responder.requestHeaderTooLarge)
        let counter = ReadCounter()
        try channel.pipeline.syncOperations.addHandler(counter)
        try channel.pipeline.syncOperations.addHandler(RequestGuard(state: state))
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
        try channel.pipeline.syncOperations.addHandler(heads)
        try channel.pipeline.syncOperations.addHandler(HTTPRequestHandler(responder: responder, state: state))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, state, counter)
    }

    static func requests(_ range: Range<Int>) -> ByteBuffer {
        var buffer = ByteBuffer()
        for index in range { buffer.writeString("GET /r\(index) HTTP/1.1\r\nHost: t\r\n\r\n") }
        return buffer
    }

    /// The bodies of every answer written so far, in order.
    static func answers(_ channel: EmbeddedChannel) throws -> [String] {
        var bodies: [String] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
            let text = String(buffer: buffer)
            if let range = text.range(of: "\r\n\r\n") { bodies.append(String(text[range.upperBound...])) }
        }
        return bodies
    }

    @Test("2,000 pipelined requests in one read: a few are decoded, input pauses, and every one is answered in order")
    func pipelinedFlood() throws {
        let responder = HeldResponder()
        let heads = HeadCounter()
        let (channel, state, counter) = try Self.pipeline(responder, heads: heads)
        try channel.writeInbound(Self.requests(0..<2_000))
        #expect(state.inputPaused, "far more waiting than a few requests: input is paused")
        #expect(responder.received.withLock { $0.count } == 1, "one answered at a time")
        let readsBefore = counter.reads
        channel.pipeline.read()
        #expect(counter.reads == readsBefore, "no socket read while paused")
        var answered: [String] = []
        var most = 0
        while responder.answerOne() {
            channel.embeddedEventLoop.run()
            answered += try Self.answers(channel)
            // What the handler has decoded but not answered stays a few requests (plus one slice).
            // 16 waiting parts pause the input; at most one 1 KiB slice more is decoded.
            most = max(most, heads.heads - answered.count)
        }
        #expect(answered == (0..<2_000).map { "/r\($0)" }, "every request answered once, in order")
        #expect(most <= 8 + 1024 / 30 + 1, "requests decoded ahead of their answers: \(most)")
        #expect(responder.received.withLock { $0.count } == 2_000)
        #expect(!state.inputPaused)
        #expect(counter.reads == readsBefore + 1, "the read asked for while paused is made once drained")
        channel.pipeline.read()
        #expect(counter.reads == readsBefore + 2, "and reads pass again")
        _ = try? channel.finish()
    }

    @Test("one request at a time never pauses input nor stops reads")
    func oneAtATime() throws {
        let responder = HeldResponder()
        let (channel, state, counter) = try Self.pipeline(responder)
        for index in 0..<50 {
            try channel.writeInbound(Self.requests(index..<index + 1))
            #expect(!state.inputPaused)
            let reads = counter.reads
            channel.pipeline.read()
            #expect(counter.reads == reads + 1, "the read passes while an answer is under way")
            #expect(responder.answerOne())
            #expect(try Self.answers(channel) == ["/r\(index)"])
        }
        _ = try? channel.finish()
    }

    @Test("while the socket is not writable requests wait and input pauses; writable again, they are answered")
    func notWritable() throws {
        let responder = HeldResponder()
        let (channel, state, _) = try Self.pipeline(responder)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try channel.writeInbound(Self.requests(0..<100))
        #expect(responder.received.withLock { $0.isEmpty }, "nothing is handled while answers cannot leave")
        #expect(state.inputPaused)
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        var answered: [String] = []
        while responder.answerOne() {
            channel.embeddedEventLoop.run()
            answered += try Self.answers(channel)
        }
        #expect(answered == (0..<100).map { "/r\($0)" })
        _ = try? channel.finish()
    }

    @Test("a client that shuts its side after pipelining still gets every answer, also those held back undecoded")
    func halfCloseAfterFlood() throws {
        let responder = HeldResponder()
        let (channel, _, _) = try Self.pipeline(responder)
        try channel.writeInbound(Self.requests(0..<300))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        var answered: [String] = []
        while responder.answerOne() {
            channel.embeddedEventLoop.run()
            answered += try Self.answers(channel)
        }
        #expect(answered == (0..<300).map { "/r\($0)" })
        #expect(!channel.isActive, "closed once everything sent before the shut is answered")
    }

    @Test("pipelined requests with large heads pause the input by their bytes, not only by their count")
    func largeHeads() throws {
        let responder = HeldResponder()
        let heads = HeadCounter()
        let (channel, state, _) = try Self.pipeline(responder, heads: heads)
        var flood = ByteBuffer()
        let padding = String(repeating: "p", count: 10_000)
        for index in 0..<50 { flood.writeString("GET /r\(index) HTTP/1.1\r\nHost: t\r\nX-Pad: \(padding)\r\n\r\n") }
        try channel.writeInbound(flood)
        #expect(state.inputPaused)
        #expect(heads.heads <= 4, "10 KiB heads decoded ahead: \(heads.heads)")
        var answered: [String] = []
        while responder.answerOne() {
            channel.embeddedEventLoop.run()
            answered += try Self.answers(channel)
            #expect(heads.heads - answered.count <= 4)
        }
        #expect(answered == (0..<50).map { "/r\($0)" })
        _ = try? channel.finish()
    }

    @Test("a connection whose answers stay over the high-water mark for the request timeout is closed and counted")
    func unwritableIsClosed() throws {
        let responder = HeldResponder()
        let statistics = HTTPServerStatistics()
        let (channel, _, _) = try Self.pipeline(responder, statistics: statistics)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(9_000))
        #expect(channel.isActive, "not before the request timeout (10 s)")
        // Writable again in time: the check is off.
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(channel.isActive)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(10_001))
        #expect(!channel.isActive, "closed as a slow client")
        #expect(statistics.timedOutConnections == 1)
    }
}
