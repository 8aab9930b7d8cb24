import ReservationCore
import Synchronization
import TestSupport
import Testing

/// What the load tasks of a test saw, shared with the test.
final class LoadTally: Sendable {
    let stop = Atomic<Bool>(false)
    let granted = Mutex<[String]>([])
    let paid = Mutex<[String]>([])
    /// Statuses other than 201, when a test keeps them.
    let others = Mutex<[Int]>([])

    /// `clients` tasks that each send `request(client, attempt)` until `stop` is set, keeping the
    /// reservation id of every 201 and the status of every other answer (a request that failed
    /// outright counts as neither).
    func load(clients: Int, _ request: @escaping @Sendable (Int, Int) async throws -> TestHTTPResponse) -> Task<Void, Never> {
        Task {
            await withTaskGroup(of: Void.self) { group in
                for client in 0..<clients {
                    group.addTask {
                        var attempt = 0
                        while !self.stop.load(ordering: .relaxed) {
                            attempt += 1
                            guard let response = try? await request(client, attempt) else { continue }
                            if response.status == 201, let id = response.json?["reservationId"]?.stringValue {
                                self.granted.withLock { $0.append(id) }
                            } else {
                                self.others.withLock { $0.append(response.status) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Waits (polling, generous limit) until `count` more reservations were granted.
    func progress(_ count: Int) async throws {
        let before = granted.withLock { $0.count }
        #expect(try await eventually { self.granted.withLock { $0.count } >= before + count })
    }
}
