import NIOCore
import NIOPosix
import Synchronization

/// One Redis connection, confined to one event loop: a thin driver of
/// `RedisConnectionStateMachine`, which holds every protocol decision (pipelining, handshake,
/// shedding, timeouts, NOSCRIPT recovery). This class only does what the actions say: open the
/// socket, write, arm and cancel the batch timer, complete promises, close.
///
/// `@unchecked Sendable`: all mutable state is read and written only on `eventLoop` (calls from
/// elsewhere hop there first), which is the same guarantee an actor gives, without an actor's hop.
final class RedisConnection: @unchecked Sendable {
    let eventLoop: any EventLoop
    private let configuration: RedisConfiguration
    private var state: RedisConnectionStateMachine<RedisWaiter>
    private var channel: (any Channel)?
    private var batchTimer: Scheduled<Void>?
    /// NOSCRIPT recoveries, batches and commands (the client sums them).
    let counters = RedisConnectionCounters()
    /// Work to run right before the next batch is formed (`stage`), and the flush task or the
    /// task that runs it when no flush is due, pending on the loop.
    private var staged: [@Sendable () -> Void] = []
    private var flushPending = false
    private var stagedRunPending = false
    /// Set while staged work runs on its own (no flush was due): its calls are written at once,
    /// the `REDIS_BATCH_DELAY_US` it waited for being over.
    private var flushingStaged = false

    init(eventLoop: any EventLoop, configuration: RedisConfiguration) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        let wait = RedisConnectionStateMachine<RedisWaiter>.ReplicationWait(
            replicas: configuration.waitReplicas,
            timeoutMilliseconds: Int(clamping: configuration.waitTimeout.components.seconds * 1000)
                &+ Int(configuration.waitTimeout.components.attoseconds / 1_000_000_000_000_000))
        self.state = RedisConnectionStateMachine(
            maxPendingCommands: configuration.maxPendingCommands, shedAfter: configuration.shedAfter.map { TimeAmount($0) },
            wait: configuration.waitReplicas > 0 ? wait : nil)
    }

    /// `script`: the source of the script an EVALSHA runs, so a NOSCRIPT reply is recovered here.
    /// `replication`: whether the command may change state (see `RedisReplication`).
    func send(_ arguments: [RedisArgument], script: String? = nil, replication: RedisReplication = .none) -> EventLoopFuture<RedisValue> {
        if eventLoop.inEventLoop { return enqueue(arguments, script: script, replication: replication) }
        return eventLoop.flatSubmit { self.enqueue(arguments, script: script, replication: replication) }
    }

    /// The same, with the reply handed to `completion` on this connection's event loop: no
    /// promise or future per call (the reserve path's hot loop).
    func send(
        _ arguments: [RedisArgument], script: String? = nil, replication: RedisReplication = .none,
        completion: @escaping RedisWaiter.Completion
    ) {
        if eventLoop.inEventLoop {
            enqueue(arguments, script: script, replication: replication, waiter: .callback(completion))
        } else {
            eventLoop.execute { self.enqueue(arguments, script: script, replication: replication, waiter: .callback(completion)) }
        }
    }

    /// Sends several commands back to back; they leave in the same batch (each with
    /// `replication`).
    func send(batch commands: [[RedisArgument]], replication: RedisReplication = .none) -> EventLoopFuture<
        [Result<RedisValue, any Error>]
    > {
        let work = { @Sendable () -> EventLoopFuture<[Result<RedisValue, any Error>]> in
            let futures = commands.map { self.enqueue($0, script: nil, replication: replication) }
            return EventLoopFuture.whenAllComplete(futures, on: self.eventLoop)
        }
        if eventLoop.inEventLoop { return work() }
        return eventLoop.flatSubmit(work)
    }

    /// Runs `work` on this loop right before the next batch is formed: what `work` sends joins
    /// that batch. With no batch due, one is: later in this turn of the loop, or after
    /// `REDIS_BATCH_DELAY_US` (work staged meanwhile joins it). A batch in flight does not
    /// hold staged work back: it runs as above and its calls wait in the queue like any other.
    /// (The reserve coalescer adds its calls here.) On this connection's loop only.
    func stage(_ work: @escaping @Sendable () -> Void) {
        eventLoop.assertInEventLoop()
        staged.append(work)
        guard !flushPending, !stagedRunPending else { return }
        stagedRunPending = true
        let runStagedNow = { @Sendable in
            self.stagedRunPending = false
            self.flushingStaged = true
            self.runStaged()
            self.flushingStaged = false
        }
        if configuration.batchDelay > .zero {
            eventLoop.scheduleTask(in: TimeAmount(configuration.batchDelay), runStagedNow)
        } else {
            eventLoop.execute(runStagedNow)
        }
    }

    private func runStaged() {
        guard !staged.isEmpty else { return }
        let work = staged
        staged.removeAll(keepingCapacity: true)
        for item in work { item() }
    }

    private func enqueue(_ arguments: [RedisArgument], script: String?, replication: RedisReplication) -> EventLoopFuture<RedisValue> {
        let promise = eventLoop.makePromise(of: RedisValue.self)
        enqueue(arguments, script: script, replication: replication, waiter: .promise(promise))
        return promise.futureResult
    }

    private func enqueue(_ arguments: [RedisArgument], script: String?, replication: RedisReplication, waiter: RedisWaiter) {
        eventLoop.assertInEventLoop()
        counters.commands.wrappingAdd(1, ordering: .relaxed)
        run(state.enqueue(arguments, waiter: waiter, script: script, replication: replication, now: .now()))
    }

    private func run(_ action: RedisConnectionStateMachine<RedisWaiter>.Action) {
        switch action {
        case .none:
            break
        case .connect:
            connect()
        case .scheduleFlush:
            flushPending = true
            let flush = { @Sendable in
                self.flushPending = false
                // staged work joins the batch about to be formed
                self.runStaged()
                self.run(self.state.flush(now: .now()))
            }
            if configuration.batchDelay > .zero && !flushingStaged {
                eventLoop.scheduleTask(in: TimeAmount(configuration.batchDelay), flush)
            } else {
                eventLoop.execute(flush)
            }
        case .write(let bytes, let batch):
            guard let channel else { return }
            channel.writeAndFlush(bytes, promise: nil)
            counters.batches.wrappingAdd(1, ordering: .relaxed)
            batchTimer?.cancel()
            batchTimer = eventLoop.scheduleTask(in: TimeAmount(configuration.commandTimeout)) { [weak self] in
                guard let self else { return }
                self.run(self.state.batchTimedOut(batch))
            }
        case .fail(let promises, let error):
            for waiter in promises { waiter.complete(.failure(error)) }
        case .close:
            channel?.close(promise: nil)
        }
    }

    private func connect() {
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
                    if self.state.phase == .connecting { self.channel = channel }
                    let action = self.state.connected(handshake: self.handshake, now: .now())
                    if case .close = action {
                        channel.close(promise: nil)
                    } else {
                        self.run(action)
                    }
                case .failure(let error):
                    self.run(
                        self.state.connectFailed(
                            RedisError.connectFailed(
                                host: configuration.host, port: configuration.port, reason: Self.describe(error))))
                }
            }
    }

    private var handshake: [[RedisArgument]] {
        var commands: [[RedisArgument]] = []
        if let password = configuration.password { commands.append(["AUTH", .string(password)]) }
        if configuration.database != 0 { commands.append(["SELECT", .int(configuration.database)]) }
        return commands
    }

    // MARK: called by the channel handler, on the event loop

    func received(_ reply: RedisValue, on channel: any Channel) {
        guard channel === self.channel else { return }
        let action = state.received(reply)
        if let (waiter, result) = action.completion { waiter.complete(result) }
        if let replicated = action.replicated {
            counters.waits.wrappingAdd(1, ordering: .relaxed)
            if !replicated { counters.waitTimeouts.wrappingAdd(1, ordering: .relaxed) }
            for (waiter, result) in action.released { waiter.complete(result) }
        }
        if action.held { counters.heldReplies.wrappingAdd(1, ordering: .relaxed) }
        if action.batchFinished {
            batchTimer?.cancel()
            batchTimer = nil
        }
        if action.scriptReloaded { counters.scriptLoads.wrappingAdd(1, ordering: .relaxed) }
        run(action.then)
    }

    func failed(_ error: RedisError, on channel: any Channel) {
        guard channel === self.channel else { return }
        run(state.failed(error))
    }

    func closed(_ channel: any Channel) {
        guard channel === self.channel else { return }
        self.channel = nil
        batchTimer?.cancel()
        batchTimer = nil
        run(state.closed())
    }

    func close() -> EventLoopFuture<Void> {
        eventLoop.submit {
            self.batchTimer?.cancel()
            self.run(self.state.shutdown())
            self.channel?.close(promise: nil)
            self.channel = nil
        }
    }

    private static func describe(_ error: any Error) -> String {
        if case ChannelError.connectTimeout? = error as? ChannelError { return "connect timed out" }
        if let connectError = error as? NIOConnectionError {
            return connectError.connectionErrors.first.map { "\($0.error)" } ?? "connection failed"
        }
        return "\(error)"
    }
}

/// Who waits for a command's reply: a promise (the future API) or a callback (the hot path,
/// which saves the promise, its future and the callback list per call).
enum RedisWaiter {
    typealias Completion = @Sendable (Result<RedisValue, any Error>) -> Void

    case promise(EventLoopPromise<RedisValue>)
    case callback(Completion)

    func complete(_ result: Result<RedisValue, RedisError>) {
        switch self {
        case .promise(let promise): promise.completeWith(result.mapError { $0 as any Error })
        case .callback(let completion): completion(result.mapError { $0 as any Error })
        }
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

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.failed(.connectionClosed, on: context.channel)
    }
}
