import NIOCore
import NIOHTTP1

/// Where one connection is between requests, and the timer that belongs to that place. A plain
/// value that returns what to do, so every transition is tested without a socket
/// (`ConnectionLifecycleTests`); `ConnectionState` carries it out on the channel.
public struct ConnectionLifecycle: Equatable, Sendable {
    public enum Phase: Equatable, Sendable {
        /// No request under way: the idle timer runs.
        case idle
        /// A request's first bytes arrived, its head is not complete: the request timer runs and
        /// the head's bytes are counted against the limit.
        case receivingHead(bytes: Int)
        /// The head is parsed, the body is arriving: the request timer still runs.
        case receivingBody
        /// The request is complete and being answered: no timer (the responder bounds its waits).
        case handling
        /// A refusal was written and our side shut: input is read and dropped until the client
        /// closes or the linger timer ends it, so the refusal is not lost to a reset.
        case lingering
    }

    public enum Timer: Equatable, Sendable {
        case none, idle, request, linger
    }

    public private(set) var phase: Phase = .idle
    public let maxHeadBytes: Int

    public init(maxHeadBytes: Int) { self.maxHeadBytes = maxHeadBytes }

    /// The timer the current phase needs.
    public var timer: Timer {
        switch phase {
        case .idle: return .idle
        case .receivingHead, .receivingBody: return .request
        case .handling: return .none
        case .lingering: return .linger
        }
    }

    public enum ReadDecision: Equatable, Sendable {
        /// Hand this many bytes to the HTTP decoder (then ask again for the rest).
        case forward(Int)
        /// Hand everything to the decoder; nothing is counted in this phase.
        case forwardAll
        /// Drop the bytes (lingering after a refusal).
        case discard
    }

    /// `available` bytes arrived. In `receivingHead`, at most one byte past the head limit is
    /// handed on at a time: if the decoder has not found the end of the head by then, the head is
    /// too large, whatever follows it.
    public mutating func bytesArrived(_ available: Int) -> ReadDecision {
        switch phase {
        case .lingering:
            return .discard
        case .receivingBody, .handling:
            return .forwardAll
        case .idle:
            phase = .receivingHead(bytes: 0)
            return bytesArrived(available)
        case .receivingHead(let bytes):
            let allowed = max(1, maxHeadBytes - bytes + 1)
            let count = min(available, allowed)
            phase = .receivingHead(bytes: bytes + count)
            return .forward(count)
        }
    }

    /// After forwarding: true if the head is still incomplete past the limit (answer 431).
    public var headTooLarge: Bool {
        if case .receivingHead(let bytes) = phase { return bytes > maxHeadBytes }
        return false
    }

    /// The decoder produced a request head.
    public mutating func headReceived() {
        if phase != .lingering { phase = .receivingBody }
    }

    /// The request's end arrived: it is complete.
    public mutating func requestReceived() {
        if phase != .lingering { phase = .handling }
    }

    /// The answer is about to be written; with keep-alive the connection waits for the next
    /// request. (Called before the response's end is written, so a pipelined request that the
    /// write releases finds the connection already idle.)
    public mutating func responseWritten() {
        if phase == .handling || phase == .receivingBody { phase = .idle }
    }

    /// A refusal was written: drop input until the client goes.
    public mutating func refused() { phase = .lingering }
}

/// The lifecycle of one connection with its timers, shared by `RequestGuard` (which sees raw
/// bytes) and `HTTPRequestHandler` (which sees requests). Both live on the channel's event loop,
/// which is the only place this object is touched.
final class ConnectionState {
    private(set) var lifecycle: ConnectionLifecycle
    let limits: HTTPServerLimits
    let statistics: HTTPServerStatistics
    /// The 431 answer, rendered once per connection only when needed.
    let refusal: HTTPResponse
    /// The timer the phase needs and when it runs out (nil: no timer).
    private var armed: ConnectionLifecycle.Timer = .none
    private var deadline: NIODeadline?
    /// The one scheduled check of the deadline, and when it runs. Arming a timer only moves the
    /// deadline: the check is rescheduled only when it would come too late, so a keep-alive
    /// request costs two clock reads instead of two timer schedules and two cancels (which were
    /// a tenth of the gateway's CPU on the sold-out path).
    private var check: Scheduled<Void>?
    private var checkAt: NIODeadline = .distantFuture
    /// The longest a check is put off: the shortest of the two common timeouts, so moving from
    /// idle to receiving a request never needs an earlier check.
    private let checkInterval: TimeAmount
    /// A graceful stop reached this connection: NIO's pipelining handler owns its last answer.
    var quiescing = false
    static let lingerTime: TimeAmount = .seconds(2)

    /// The request handler has enough requests waiting (pipelined behind the one being
    /// answered, or behind a socket whose peer does not read): `RequestGuard` stops handing
    /// input to the decoder and stops reading the socket until it is cleared.
    private(set) var inputPaused = false
    /// Set by `RequestGuard`: hands it the input it held back. Cleared when the channel goes.
    var resumeInput: (() -> Void)?

    func pauseInput() { inputPaused = true }

    /// The handler's backlog drained: the guard resumes on the loop's next turn (never from
    /// inside the handler's own drain, which would re-enter it).
    func unpauseInput(_ eventLoop: any EventLoop) {
        guard inputPaused else { return }
        inputPaused = false
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        eventLoop.execute { bound.value.resumeInput?() }
    }

    init(limits: HTTPServerLimits, statistics: HTTPServerStatistics, refusal: HTTPResponse) {
        self.lifecycle = ConnectionLifecycle(maxHeadBytes: limits.maxHeadBytes)
        self.limits = limits
        self.statistics = statistics
        self.refusal = refusal
        self.checkInterval = max(.milliseconds(10), TimeAmount(min(limits.idleTimeout, limits.requestTimeout)))
    }

    func update(_ channel: any Channel, _ change: (inout ConnectionLifecycle) -> Void) {
        change(&lifecycle)
        syncTimer(channel)
    }

    func bytesArrived(_ available: Int, _ channel: any Channel) -> ConnectionLifecycle.ReadDecision {
        let decision = lifecycle.bytesArrived(available)
        syncTimer(channel)
        return decision
    }

    /// Arms the timer the phase needs, if it is not the one running. A phase keeps its timer
    /// across transitions within it (the request timer runs from the first byte to the end).
    private func syncTimer(_ channel: any Channel) {
        let wanted = lifecycle.timer
        guard wanted != armed else { return }
        armed = wanted
        let delay: TimeAmount
        switch wanted {
        case .none:
            // The scheduled check, if any, finds no deadline and stops.
            deadline = nil
            return
        case .idle: delay = TimeAmount(limits.idleTimeout)
        case .request: delay = TimeAmount(limits.requestTimeout)
        case .linger: delay = Self.lingerTime
        }
        let now = NIODeadline.now()
        let due = now + delay
        deadline = due
        if check != nil, checkAt <= due { return }
        check?.cancel()
        scheduleCheck(at: min(due, now + checkInterval), channel)
    }

    private func scheduleCheck(at time: NIODeadline, _ channel: any Channel) {
        checkAt = time
        // The state lives on the channel's event loop, where the task runs.
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        check = channel.eventLoop.scheduleTask(deadline: time) { bound.value.deadlineCheck(channel) }
    }

    private func deadlineCheck(_ channel: any Channel) {
        check = nil
        guard let deadline else { return }
        let now = NIODeadline.now()
        if deadline > now {
            scheduleCheck(at: min(deadline, now + checkInterval), channel)
            return
        }
        if armed == .request { statistics.timedOutOne() }
        channel.close(promise: nil)
    }

    func cancelTimer() {
        check?.cancel()
        check = nil
        deadline = nil
        armed = .none
    }
}

/// First in the pipeline, before the HTTP decoder: counts a request head's bytes (431 past the
/// limit, decided before the decoder buffers more), runs the connection's timers, drops input
/// after a refusal, and holds input back while the request handler is backlogged.
///
/// Backpressure: a client that pipelines faster than it is answered (or never reads its
/// answers) must not make the server decode and queue its requests without a bound (decoded,
/// a 40-byte request is ten times that). While `ConnectionState.inputPaused` is set, bytes
/// already read stay here undecoded and the socket is not read; what can arrive meanwhile is
/// bounded by one read loop (`maxMessagesPerRead` reads of at most the receive allocator's
/// largest buffer, set in `HTTPServer`). Input goes to the decoder in slices of `sliceBytes`, so
/// a pause takes effect within a slice. The common case (one request per read, nothing
/// waiting) forwards the buffer as it came: no extra read calls, no copies.
final class RequestGuard: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The most input handed to the decoder at once while forwarding.
    static let sliceBytes = 1024

    private let state: ConnectionState
    /// Read from the socket while paused, not yet given to the decoder.
    private var held: ByteBuffer?
    /// The pipeline asked for a read while input was held back.
    private var readPending = false
    /// The client shut its side while input was held: passed on once that input is forwarded
    /// (the handler must see every request before it learns there are no more).
    private var inputClosedPending = false

    init(state: ConnectionState) { self.state = state }

    func handlerAdded(context: ChannelHandlerContext) {
        // The state and this handler live on the channel's loop; the hook is dropped when the
        // channel goes (channelInactive / handlerRemoved), which breaks the reference cycle.
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        state.resumeInput = {
            let (handler, context) = bound.value
            handler.resume(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        state.resumeInput = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        state.update(context.channel) { _ in }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.cancelTimer()
        state.resumeInput = nil
        held = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if held != nil || state.inputPaused {
            hold(&buffer)
            return
        }
        forward(&buffer, context: context)
        if buffer.readableBytes > 0 { hold(&buffer) }
    }

    private func hold(_ buffer: inout ByteBuffer) {
        if held == nil {
            held = buffer
        } else {
            held!.writeBuffer(&buffer)
        }
    }

    /// Hands `buffer` to the decoder until it is empty or input is paused.
    private func forward(_ buffer: inout ByteBuffer, context: ChannelHandlerContext) {
        while buffer.readableBytes > 0, !state.inputPaused, context.channel.isActive {
            let available = min(buffer.readableBytes, Self.sliceBytes)
            switch state.bytesArrived(available, context.channel) {
            case .discard:
                buffer.moveReaderIndex(to: buffer.writerIndex)
                return
            case .forwardAll:
                if available == buffer.readableBytes {
                    let all = buffer
                    buffer.moveReaderIndex(to: buffer.writerIndex)
                    context.fireChannelRead(wrapInboundOut(all))
                } else {
                    context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: available)!))
                }
            case .forward(let count):
                context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: count)!))
                if state.lifecycle.headTooLarge {
                    refuse(context: context, state.refusal)
                    buffer.moveReaderIndex(to: buffer.writerIndex)
                    return
                }
            }
        }
    }

    /// The handler drained its backlog: forward what was held, then read again if asked.
    private func resume(context: ChannelHandlerContext) {
        if var buffer = held {
            held = nil
            forward(&buffer, context: context)
            if buffer.readableBytes > 0 {
                // Paused again within it (or the channel went): keep the rest.
                hold(&buffer)
                return
            }
        }
        guard !state.inputPaused else { return }
        if inputClosedPending {
            inputClosedPending = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        if readPending {
            readPending = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if held != nil || state.inputPaused {
            readPending = true
        } else {
            context.read()
        }
    }

    /// Writes `response` straight to the socket (the decoder holds half a head, so the codec is
    /// bypassed), shuts our side, and lingers.
    private func refuse(context: ChannelHandlerContext, _ response: HTTPResponse) {
        state.update(context.channel) { $0.refused() }
        held = nil
        // Input is dropped from here on: read again if the handler had paused it.
        state.unpauseInput(context.eventLoop)
        let buffer = response.wire(version: .http1_1, keepAlive: false, withBody: true, allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent { state.quiescing = true }
        if let event = event as? ChannelEvent, event == .inputClosed {
            if case .lingering = state.lifecycle.phase {
                // The client read the refusal and went: done.
                context.close(promise: nil)
                return
            }
            if held != nil || state.inputPaused {
                inputClosedPending = true
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// One per connection, after NIO's HTTP decoder. Collects a request (refusing bodies over the
/// responder's limit as soon as that is known), hands it to the responder, and writes the answer
/// as one buffer (status line, headers and body encoded here: no response encoder, one write).
///
/// Pipelined requests are answered in order: parts arriving while an answer is under way wait
/// in `waiting`. Past `maxWaitingParts` (a few requests) input is paused (`RequestGuard` holds
/// it undecoded and stops reading) until they are handled; parts also wait while the socket is
/// not writable (its peer does not read), so such a client pauses itself, and if it stays so
/// for the request timeout it is closed as a slow client. Reads never stop in the common case
/// of one request at a time. (NIO's pipelining handler stopped reading whenever an answer was
/// under way, which cost two `epoll_ctl` calls per request.) A graceful stop (`ChannelShouldQuiesceEvent`) closes an idle connection at once and a busy one
/// after its answer, which is marked `Connection: close`.
final class HTTPRequestHandler<Responder: HTTPResponder>: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let responder: Responder
    private let state: ConnectionState
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    /// The current request was refused (413) and answered already; its remaining parts are dropped.
    private var refused = false
    /// A response is being produced or written (a parse error then cannot be answered).
    private var responding = false
    /// The client shut its side: the requests under way (if any) are answered, then we close.
    private var inputClosed = false
    /// Our side closes after the answer written: nothing more is answered.
    private var closing = false
    /// Parts of pipelined requests that arrived while an answer was under way, in order.
    private var waiting = CircularBuffer<HTTPServerRequestPart>()
    private var draining = false
    /// Closes the connection if the socket stays unwritable for the request timeout.
    private var unwritableCheck: Scheduled<Void>?
    /// Parts that may wait before input is paused: a request is two or three parts (head, body,
    /// end), so this is a few pipelined requests.
    static var maxWaitingParts: Int { 16 }
    /// Bytes (request targets, headers and bodies) that may wait before input is paused: a few
    /// requests with large heads must not add up to what many small ones may not.
    static var maxWaitingBytes: Int { 16 * 1024 }
    /// The bytes of the parts in `waiting`, as `size(of:)` counts them.
    private var waitingBytes = 0

    private static func size(of part: HTTPServerRequestPart) -> Int {
        switch part {
        case .head(let head):
            var bytes = 64 + head.uri.utf8.count
            for (name, value) in head.headers { bytes += name.utf8.count + value.utf8.count + 4 }
            return bytes
        case .body(let chunk): return chunk.readableBytes
        case .end: return 0
        }
    }

    init(responder: Responder, state: ConnectionState) {
        self.responder = responder
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let part = unwrapInboundIn(data)
        if responding || !waiting.isEmpty || !context.channel.isWritable {
            waiting.append(part)
            waitingBytes += Self.size(of: part)
            if waiting.count >= Self.maxWaitingParts || waitingBytes >= Self.maxWaitingBytes { state.pauseInput() }
        } else {
            handle(part, context: context)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            unwritableCheck?.cancel()
            unwritableCheck = nil
            drain(context: context)
        } else if unwritableCheck == nil {
            // Answers pile up past the high-water mark: a client that does not read them is a
            // slow client, given the request timeout to catch up.
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            unwritableCheck = context.eventLoop.scheduleTask(in: TimeAmount(state.limits.requestTimeout)) {
                let (handler, context) = bound.value
                handler.unwritableCheck = nil
                guard context.channel.isActive, !context.channel.isWritable else { return }
                handler.state.statistics.timedOutOne()
                context.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        unwritableCheck?.cancel()
        unwritableCheck = nil
        waiting.removeAll()
        waitingBytes = 0
        context.fireChannelInactive()
    }

    /// Handles waiting parts until one needs an answer that is not there yet. Not re-entered: an
    /// answer written synchronously from inside `handle` returns here and the loop goes on.
    private func drain(context: ChannelHandlerContext) {
        guard !draining else { return }
        draining = true
        defer { draining = false }
        // A client that pipelines without reading its answers fills our send buffer: its
        // requests then wait (and reads stop) until the socket drains.
        while !responding, !closing, context.channel.isWritable, let part = waiting.popFirst() {
            waitingBytes -= Self.size(of: part)
            handle(part, context: context)
        }
        if closing { waiting.removeAll() }
        if waiting.isEmpty { waitingBytes = 0 }
        if inputClosed, !responding, !closing, waiting.isEmpty {
            // Everything the client sent before it shut its side is answered.
            closing = true
            context.close(promise: nil)
            return
        }
        if waiting.isEmpty { state.unpauseInput(context.eventLoop) }
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let requestHead):
            state.update(context.channel) { $0.headReceived() }
            head = requestHead
            body = nil
            refused = false
            // Decided from Content-Length before a byte of the body is read. (NIO's decoder
            // already refused a malformed or negative one.)
            if let length = requestHead.headers.first(name: "content-length"),
                length.utf8.count > 9 || (Int(length) ?? 0) > responder.maxBodyBytes
            {
                refuse(context: context, requestHead)
            }
        case .body(var chunk):
            guard !refused else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > responder.maxBodyBytes {
                // A chunked (or lying) body: refused as soon as it passes the limit.
                body = nil
                if let requestHead = head { refuse(context: context, requestHead) }
            } else if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
        case .end:
            guard let requestHead = head, !refused else { return }
            head = nil
            state.update(context.channel) { $0.requestReceived() }
            let request = HTTPRequest(method: requestHead.method, uri: requestHead.uri, headers: requestHead.headers, body: body)
            body = nil
            responding = true
            let keepAlive = requestHead.isKeepAlive
            // The answer arrives on this channel's event loop (the responder answers on the loop it
            // is given), so the handler and its context are only ever touched there.
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            responder.respond(to: request, on: context.eventLoop) { response in
                let (handler, context) = bound.value
                handler.write(response, for: requestHead, keepAlive: keepAlive && !response.closeConnection, context: context)
            }
        }
    }

    /// 413 at once, `Connection: close`; the rest of the body is never read.
    private func refuse(context: ChannelHandlerContext, _ requestHead: HTTPRequestHead) {
        refused = true
        head = nil
        body = nil
        responding = true
        write(responder.payloadTooLarge, for: requestHead, keepAlive: false, context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // A graceful stop: an idle connection closes now, a busy one after its answer.
            if !responding, head == nil, waiting.isEmpty, !closing {
                closing = true
                context.close(promise: nil)
            }
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            // A client that sent its requests and shut its side still gets the answers; one that
            // went away between requests (or mid-request) is closed now, not at the idle timeout.
            inputClosed = true
            if !responding, waiting.isEmpty, !closing {
                closing = true
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parseError = error as? HTTPParserError else {
            context.close(promise: nil)
            return
        }
        // Not HTTP: answer once if nothing else is being answered and the connection is still
        // open for it; the decoder then closes. (A parse error also comes when a connection that
        // held half a request is closed, by a timeout or a stop: nothing is written then.)
        if !responding, !closing, waiting.isEmpty, !state.quiescing, context.channel.isActive, state.lifecycle.phase != .lingering {
            responding = true
            var response = parseError == .headerOverflow ? responder.requestHeaderTooLarge : responder.malformedRequest
            response.closeConnection = true
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
            write(response, for: head, keepAlive: false, context: context)
        }
    }

    private func write(_ response: HTTPResponse, for request: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext) {
        guard !closing else { return }
        let stopping = state.quiescing || state.statistics.isStopping
        let keepAlive = keepAlive && !stopping
        let buffer = response.wire(
            version: request.version, keepAlive: keepAlive, withBody: request.method != .HEAD, allocator: context.channel.allocator)
        responding = false
        if keepAlive && !(inputClosed && waiting.isEmpty) {
            // Idle before the bytes leave, so a waiting request handled next starts its own timer.
            state.update(context.channel) { $0.responseWritten() }
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            drain(context: context)
            return
        }
        closing = true
        waiting.removeAll()
        waitingBytes = 0
        let channel = context.channel
        // The last answer (the client shut its side, the server is stopping, or the answer says
        // close): our side is shut after it and input is read and dropped until the client goes,
        // so the answer is not lost to a reset; the linger timer bounds all of it, including a
        // last write that a client that never reads would keep pending forever.
        state.update(context.channel) { $0.refused() }
        state.unpauseInput(context.eventLoop)
        let clientGone = inputClosed
        context.writeAndFlush(wrapOutboundOut(buffer)).whenComplete { _ in
            if clientGone {
                channel.close(promise: nil)
            } else {
                channel.close(mode: .output, promise: nil)
            }
        }
    }
}
