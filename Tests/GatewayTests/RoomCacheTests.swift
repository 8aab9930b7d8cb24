import NIOCore
import NIOEmbedded
import ReservationCore
import Synchronization
import Testing

@testable import GatewayCore

/// The gateway's room snapshots (`RoomCache`), with every read's completion in the test's hands
/// (an embedded event loop and promises the test completes), so each interleaving a poll can
/// meet is forced, not hoped for: reads shared, a PATCH during a read, a failed read, the bound.
@Suite("Room cache")
struct RoomCacheTests {
    /// A room snapshot; `joined` tells snapshots apart.
    static func snapshot(joined: Int64, opens: Int64? = nil, drawn: Bool = true) -> RoomSnapshot {
        let settings = BasketSettings(
            holdSeconds: 60, maxPerConsumer: 1, opensAtMilliseconds: opens,
            waitingRoom: WaitingRoomSettings(admitPerMinute: 60, admissionSeconds: 30))
        let basket = BasketState(stock: 5, pending: 0, confirmed: 0, capacity: 5, settings: settings)
        let room = RoomRecord(
            epoch: String(repeating: "a", count: 32), joined: joined, preQueue: drawn ? 0 : nil,
            seed: drawn ? String(repeating: "b", count: 64) : nil,
            drawnAtMilliseconds: drawn ? 1_000 : nil,
            schedule: RoomSchedule(base: 0, baseAdmittedAt: 0, since: 1_000, perMinute: 60, expiredThrough: 0))
        return RoomSnapshot(basket: basket, room: room, members: joined, observedAtMilliseconds: 1_000)
    }

    /// Reads the test completes by hand, counted.
    final class Reads: Sendable {
        let loop: EmbeddedEventLoop
        private let promises = Mutex<[EventLoopPromise<RoomSnapshot>]>([])
        init(_ loop: EmbeddedEventLoop) { self.loop = loop }
        var count: Int { promises.withLock { $0.count } }
        func fetch() -> EventLoopFuture<RoomSnapshot> {
            let promise = loop.makePromise(of: RoomSnapshot.self)
            promises.withLock { $0.append(promise) }
            return promise.futureResult
        }
        func complete(_ index: Int, with result: Result<RoomSnapshot, any Error>) {
            promises.withLock { $0[index] }.completeWith(result)
        }
    }

    /// What a future answered, once it has (the embedded loop runs callbacks inline).
    final class Answer: Sendable {
        private let result = Mutex<Result<RoomCache.Fresh, any Error>?>(nil)
        init(_ future: EventLoopFuture<RoomCache.Fresh>) { future.whenComplete { result in self.result.withLock { $0 = result } } }
        var joined: Int64? { result.withLock { try? $0?.get().snapshot.room.joined } }
        var failed: Bool { result.withLock { if case .failure = $0 { true } else { false } } }
        var pending: Bool { result.withLock { $0 == nil } }
    }

    struct ReadFailed: Error {}

    @Test("one read for the polls that arrive while it runs; all of them get its snapshot, and the next poll is answered from it")
    func singleFlight() {
        let loop = EmbeddedEventLoop()
        let cache = RoomCache()
        let reads = Reads(loop)
        let answers = (0..<3).map { _ in Answer(cache.snapshot("b1", on: loop, fetch: reads.fetch)) }
        #expect(reads.count == 1)
        #expect(answers.allSatisfy { $0.pending })
        #expect(cache.cached("b1") == nil)
        reads.complete(0, with: .success(Self.snapshot(joined: 7)))
        #expect(answers.allSatisfy { $0.joined == 7 })
        #expect(cache.cached("b1")?.snapshot.room.joined == 7)
        #expect(cache.mayHoldRooms)
        #expect(Answer(cache.snapshot("b1", on: loop, fetch: reads.fetch)).joined == 7)
        #expect(reads.count == 1)
    }

    @Test("a PATCH while a read runs: the read answers the polls that waited for it but is not kept (it may predate the change)")
    func forgottenDuringRead() {
        let loop = EmbeddedEventLoop()
        let cache = RoomCache()
        let reads = Reads(loop)
        let first = Answer(cache.snapshot("b1", on: loop, fetch: reads.fetch))
        cache.forget("b1")
        let second = Answer(cache.snapshot("b1", on: loop, fetch: reads.fetch))  // joins the same read
        #expect(reads.count == 1)
        reads.complete(0, with: .success(Self.snapshot(joined: 3)))
        #expect(first.joined == 3 && second.joined == 3)
        #expect(cache.cached("b1") == nil)
        // The next poll reads again, and that read is kept.
        let third = Answer(cache.snapshot("b1", on: loop, fetch: reads.fetch))
        #expect(reads.count == 2)
        reads.complete(1, with: .success(Self.snapshot(joined: 4)))
        #expect(third.joined == 4 && cache.cached("b1")?.snapshot.room.joined == 4)
        // A PATCH after it: forgotten at once.
        cache.forget("b1")
        #expect(cache.cached("b1") == nil)
    }

    @Test("a failed read fails its waiting polls and leaves nothing behind; the next poll reads again")
    func failedRead() {
        let loop = EmbeddedEventLoop()
        let cache = RoomCache()
        let reads = Reads(loop)
        let answers = (0..<2).map { _ in Answer(cache.snapshot("b1", on: loop, fetch: reads.fetch)) }
        reads.complete(0, with: .failure(ReadFailed()))
        #expect(answers.allSatisfy { $0.failed })
        #expect(cache.cached("b1") == nil)
        _ = Answer(cache.snapshot("b1", on: loop, fetch: reads.fetch))
        #expect(reads.count == 2)
    }

    @Test("a join's snapshot is kept, but never over a read in flight (which is kept when it lands)")
    func storeAndReads() {
        let loop = EmbeddedEventLoop()
        let cache = RoomCache()
        let reads = Reads(loop)
        cache.store("b1", Self.snapshot(joined: 1))
        #expect(cache.cached("b1")?.snapshot.room.joined == 1)
        let answer = Answer(cache.snapshot("b2", on: loop, fetch: reads.fetch))
        cache.store("b2", Self.snapshot(joined: 9))
        #expect(cache.cached("b2") == nil)
        reads.complete(0, with: .success(Self.snapshot(joined: 2)))
        #expect(answer.joined == 2 && cache.cached("b2")?.snapshot.room.joined == 2)
    }

    @Test("past an undrawn opening a snapshot is never used (the read that draws is due); a snapshot is kept at most maxAge")
    func neverPastTheDrawNorItsAge() {
        let loop = EmbeddedEventLoop()
        let cache = RoomCache()
        let reads = Reads(loop)
        // Opens at 1,000, read at 1,000, not drawn: due now.
        cache.store("due", Self.snapshot(joined: 1, opens: 1_000, drawn: false))
        #expect(cache.cached("due") == nil)
        _ = Answer(cache.snapshot("due", on: loop, fetch: reads.fetch))
        #expect(reads.count == 1)
        // Opening far ahead, not drawn: used.
        cache.store("later", Self.snapshot(joined: 1, opens: 1_000_000_000, drawn: false))
        #expect(cache.cached("later") != nil)
        // No age at all: never used.
        let ageless = RoomCache(maxAge: .nanoseconds(0))
        ageless.store("b1", Self.snapshot(joined: 1))
        #expect(ageless.cached("b1") == nil)
    }

    @Test("at most maxRooms rooms: beyond them the ready ones are forgotten, a read in flight keeps its polls and lands")
    func bound() {
        let loop = EmbeddedEventLoop()
        let cache = RoomCache()
        let reads = Reads(loop)
        for index in 0..<(RoomCache.maxRooms - 1) { cache.store("r\(index)", Self.snapshot(joined: 1)) }
        let loading = Answer(cache.snapshot("loading", on: loop, fetch: reads.fetch))  // the 10,000th
        #expect(cache.cached("r0") != nil && cache.cached("r9998") != nil)
        cache.store("new", Self.snapshot(joined: 5))
        #expect(cache.cached("new")?.snapshot.room.joined == 5)
        #expect(cache.cached("r0") == nil && cache.cached("r9998") == nil)
        reads.complete(0, with: .success(Self.snapshot(joined: 6)))
        #expect(loading.joined == 6 && cache.cached("loading")?.snapshot.room.joined == 6)
    }
}
