import NIOCore
import NIOPosix
import Synchronization

/// A small pool of libpq connections driven by its own threads, so no blocking libpq call ever
/// runs on an event loop or on Swift's cooperative pool. At most `size` statements run at once.
public final class PostgresClient: Sendable {
    /// A connection parked between uses.
    /// `@unchecked Sendable`: a parked connection is touched by nobody; it moves between pool
    /// threads only through the mutex, so exactly one thread uses it at a time.
    private struct Parked: @unchecked Sendable { let connection: PostgresConnection }

    public let url: String
    public let settings: PostgresSessionSettings
    private let threadPool: NIOThreadPool
    private let idle = Mutex<[Parked]>([])
    private let isShutdown = Atomic<Bool>(false)

    public init(url: String, size: Int = 4, settings: PostgresSessionSettings = PostgresSessionSettings()) {
        self.url = url
        self.settings = settings
        self.threadPool = NIOThreadPool(numberOfThreads: max(1, size))
        threadPool.start()
    }

    /// Runs `body` with a connection of its own, on a pool thread. A connection that broke
    /// during `body` is dropped, and the next call connects afresh.
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        guard !isShutdown.load(ordering: .relaxed) else {
            throw PostgresError(kind: .shutdown, message: "client is shut down")
        }
        return try await threadPool.runIfActive {
            let connection = try self.checkOut()
            do {
                let value = try body(connection)
                self.checkIn(connection)
                return value
            } catch {
                self.checkIn(connection)
                throw error
            }
        }
    }

    /// Runs `body` inside a transaction on one connection.
    public func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        try await withConnection { try $0.transaction(body) }
    }

    public func query(_ sql: String, _ parameters: [PostgresValue] = []) async throws -> [PostgresRow] {
        try await withConnection { try $0.query(sql, parameters) }
    }

    @discardableResult
    public func execute(_ sql: String, _ parameters: [PostgresValue] = []) async throws -> Int {
        try await withConnection { try $0.execute(sql, parameters) }
    }

    private func checkOut() throws -> PostgresConnection {
        while let parked = idle.withLock({ $0.popLast() }) {
            if parked.connection.isHealthy { return parked.connection }
        }
        return try PostgresConnection(url: url, settings: settings)
    }

    private func checkIn(_ connection: PostgresConnection) {
        guard connection.isHealthy, !isShutdown.load(ordering: .relaxed) else { return }
        idle.withLock { $0.append(Parked(connection: connection)) }
    }

    /// Stops the pool's threads and closes idle connections.
    public func shutdown() async {
        isShutdown.store(true, ordering: .relaxed)
        try? await threadPool.shutdownGracefully()
        idle.withLock { $0.removeAll() }
    }
}
