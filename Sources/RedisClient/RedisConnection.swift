import NIOCore
import NIOPosix

/// One Redis connection, confined to one event loop, that pipelines: commands queue in `outbox`
/// while a batch is on the wire, and leave together, in one write, as soon as that batch's last
/// reply arrives. Replies come back in order, so each completes the oldest in-flight promise.
///
/// `@unchecked Sendable`: all mutable state is read and written only on `eventLoop` (calls from
/// elsewhere hop there first), which is the same guarantee an actor gives, without an actor's hop.
final class RedisConnection: @unchecked Sendable {
    private enum State {
        case idle
        case connecting
        case ready(Channel)
        case shutdown
    }

    let eventLoop: EventLoop
    private let configuration: RedisConfiguration
    private var state: State = .idle
    private var outbox: ByteBuffer
    private var outboxPromises: [EventLoopPromise<RedisValue>] = []
    private var inFlight = CircularBuffer<EventLoopPromise<RedisValue>>(initialCapacity: 64)
    private var flushScheduled = false
    private var batchTimeout: Scheduled<Void>?
    /// When the batch now on the wire was written (nil when nothing is in flight).
    private var batchSentAt: NIODeadline?
    /// Why the current channel is being closed, when we close it ourselves.
    private var closeReason: RedisError?

    init(eventLoop: EventLoop, configuration: RedisConfiguration) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.outbox = ByteBufferAllocator().buffer(capacity: 4096)
    }

    func send(_ arguments: [RedisArgument]) -> EventLoopFuture<RedisValue> {
        if eventLoop.inEventLoop { return enqueue(arguments) }
        return eventLoop.flatSubmit { self.enqueue(arguments) }
    }

    /// Sends several commands back to back; they leave in the same batch.
    func send(batch commands: [[RedisArgument]]) -> EventLoopFuture<[Result<RedisValue, Error>]> {
        let work = { @Sendable () -> EventLoopFuture<[Result<RedisValue, Error>]> in
            let futures = commands.map { self.enqueue($0) }
            return EventLoopFuture.whenAllComplete(futures, on: self.eventLoop)
        }
        if eventLoop.inEventLoop { return work() }
        return eventLoop.flatSubmit(work)
    }

    private func enqueue(_ arguments: [RedisArgument]) -> EventLoopFuture<RedisValue> {
        eventLoop.assertInEventLoop()
        let promise = eventLoop.makePromise(of: RedisValue.self)
        if shouldShed() {
            promise.fail(RedisError.overloaded)
            return promise.futureResult
        }
        switch state {
        case .shutdown:
            promise.fail(RedisError.shutdown)
            return promise.futureResult
        case .idle:
            append(arguments, promise)
            connect()
        case .connecting:
            append(arguments, promise)
        case .ready:
            append(arguments, promise)
            if inFlight.isEmpty { scheduleFlush() }
        }
        return promise.futureResult
    }

    /// Load shedding: a call that would wait behind too many others, or behind a batch Redis has
    /// not answered for `shedAfter`, fails at once (and is never sent) instead of joining a queue
    /// that only grows. Calls already admitted keep their place and their latency.
    private func shouldShed() -> Bool {
        if outboxPromises.count + inFlight.count >= configuration.maxPendingCommands { return true }
        if let limit = configuration.shedAfter, let sentAt = batchSentAt, NIODeadline.now() - sentAt > TimeAmount(limit) { return true }
        return false
    }

    private func append(_ arguments: [RedisArgument], _ promise: EventLoopPromise<RedisValue>) {
        outbox.writeRESPCommand(arguments)
        outboxPromises.append(promise)
    }

    /// Flushes at the end of this event-loop tick, so commands from every request read in the
    /// same tick leave in one write.
    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        eventLoop.execute { self.flush() }
    }

    private func flush() {
        flushScheduled = false
        guard case .ready(let channel) = state, inFlight.isEmpty, !outboxPromises.isEmpty else { return }
        inFlight.append(contentsOf: outboxPromises)
        outboxPromises.removeAll(keepingCapacity: true)
        let batch = outbox
        outbox = channel.allocator.buffer(capacity: max(4096, batch.readableBytes))
        channel.writeAndFlush(batch, promise: nil)
        batchSentAt = .now()
        armBatchTimeout(channel)
    }

    private func armBatchTimeout(_ channel: Channel) {
        batchTimeout?.cancel()
        batchTimeout = eventLoop.scheduleTask(in: TimeAmount(configuration.commandTimeout)) { [weak self] in
            guard let self, case .ready(let current) = self.state, current === channel else { return }
            self.closeReason = .timeout
            channel.close(promise: nil)
        }
    }

    private func connect() {
        state = .connecting
        let configuration = configuration
        ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(configuration.connectTimeout))
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RedisChannelHandler(connection: self))
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    if case .shutdown = self.state {
                        channel.close(promise: nil)
                        return
                    }
                    self.state = .ready(channel)
                    self.handshake(on: channel)
                case .failure(let error):
                    if case .shutdown = self.state { return }
                    self.state = .idle
                    let reason = RedisError.connectFailed(
                        host: configuration.host, port: configuration.port, reason: Self.describe(error))
                    self.failQueued(reason)
                }
            }
    }

    /// AUTH and SELECT go out as a batch of their own, before anything queued, so no command can
    /// run unauthenticated or on the wrong database. If either fails, the connection is closed.
    private func handshake(on channel: Channel) {
        var commands: [[RedisArgument]] = []
        if let password = configuration.password { commands.append(["AUTH", .string(password)]) }
        if configuration.database != 0 { commands.append(["SELECT", .int(configuration.database)]) }
        guard !commands.isEmpty else {
            flush()
            return
        }
        var buffer = channel.allocator.buffer(capacity: 64)
        for command in commands {
            buffer.writeRESPCommand(command)
            let promise = eventLoop.makePromise(of: RedisValue.self)
            promise.futureResult.whenFailure { [weak self] error in
                guard let self, case .ready(let current) = self.state, current === channel else { return }
                self.closeReason = .handshakeFailed(Self.describeReply(error))
                channel.close(promise: nil)
            }
            inFlight.append(promise)
        }
        channel.writeAndFlush(buffer, promise: nil)
        batchSentAt = .now()
        armBatchTimeout(channel)
    }

    /// An error reply's code only (never the command or its arguments: AUTH carries the password).
    private static func describeReply(_ error: any Error) -> String {
        (error as? RedisError)?.serverCode.map(String.init) ?? "connection failed"
    }

    // MARK: called by the channel handler, on the event loop

    func received(_ reply: RedisValue, on channel: Channel) {
        guard case .ready(let current) = state, current === channel else { return }
        guard let promise = inFlight.popFirst() else {
            closeReason = .protocolError("reply without a command")
            channel.close(promise: nil)
            return
        }
        if case .error(let message) = reply {
            promise.fail(RedisError.server(message))
        } else {
            promise.succeed(reply)
        }
        if inFlight.isEmpty {
            batchTimeout?.cancel()
            batchTimeout = nil
            batchSentAt = nil
            if !outboxPromises.isEmpty { scheduleFlush() }
        }
    }

    func failed(_ error: RedisError, on channel: Channel) {
        guard case .ready(let current) = state, current === channel else { return }
        if closeReason == nil { closeReason = error }
        channel.close(promise: nil)
    }

    func closed(_ channel: Channel) {
        guard case .ready(let current) = state, current === channel else { return }
        state = .idle
        let reason = closeReason ?? .connectionClosed
        closeReason = nil
        batchTimeout?.cancel()
        batchTimeout = nil
        batchSentAt = nil
        let lost = inFlight
        inFlight.removeAll()
        for promise in lost { promise.fail(reason) }
        failQueued(reason)
    }

    private func failQueued(_ error: RedisError) {
        let queued = outboxPromises
        outboxPromises.removeAll()
        outbox.clear()
        for promise in queued { promise.fail(error) }
    }

    func close() -> EventLoopFuture<Void> {
        eventLoop.submit {
            let previous = self.state
            self.state = .shutdown
            self.batchTimeout?.cancel()
            let lost = self.inFlight
            self.inFlight.removeAll()
            for promise in lost { promise.fail(RedisError.shutdown) }
            self.failQueued(.shutdown)
            if case .ready(let channel) = previous { channel.close(promise: nil) }
        }
    }

    private static func describe(_ error: Error) -> String {
        if case ChannelError.connectTimeout? = error as? ChannelError { return "connect timed out" }
        if let connectError = error as? NIOConnectionError {
            return connectError.connectionErrors.first.map { "\($0.error)" } ?? "connection failed"
        }
        return "\(error)"
    }
}

/// Feeds socket bytes to hiredis' reader and hands each reply to the connection.
private final class RedisChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let connection: RedisConnection
    private let reader = RedisReplyReader()

    init(connection: RedisConnection) {
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            try reader.feed(buffer)
            while let reply = try reader.next() {
                connection.received(reply, on: context.channel)
            }
        } catch let error as RedisError {
            connection.failed(error, on: context.channel)
        } catch {
            connection.failed(.protocolError("\(error)"), on: context.channel)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.closed(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        connection.failed(.connectionClosed, on: context.channel)
    }
}
