import ReservationCore
import Testing
import WaitingRoom

@Suite("The waiting room's decisions, without I/O")
struct WaitingRoomTests {
    static let seed = String(repeating: "0123456789abcdef", count: 4)
    static let epoch = String(repeating: "a1b2c3d4", count: 4)

    @Test("the draw is a permutation of 1...n for every n, keyed by the seed")
    func drawIsAPermutation() throws {
        for count in Array(Int64(1)...Int64(300)) + [1023, 1024, 1025, 4097, 20_000] {
            let order = try #require(QueueOrder(seedHex: Self.seed, count: count))
            var seen = Set<Int64>()
            for join in 1...count {
                let place = order.place(ofJoin: join)
                #expect((1...count).contains(place))
                seen.insert(place)
            }
            #expect(seen.count == Int(count), "n = \(count)")
        }
        // Another seed, another order; the same seed, the same order (anyone can audit the draw).
        let one = try #require(QueueOrder(seedHex: Self.seed, count: 1000))
        let again = try #require(QueueOrder(seedHex: Self.seed, count: 1000))
        let other = try #require(QueueOrder(seedHex: String(repeating: "f", count: 64), count: 1000))
        let places = (1...1000).map(one.place(ofJoin:))
        #expect(places == (1...1000).map(again.place(ofJoin:)))
        #expect(places != (1...1000).map(other.place(ofJoin:)))
        #expect(QueueOrder(seedHex: "abc", count: 10) == nil && QueueOrder(seedHex: Self.seed, count: 0) == nil)
        #expect(QueueOrder(seedHex: String(repeating: "G", count: 64), count: 10) == nil)
    }

    @Test("the draw does not follow the join order: rank correlation over 50 seeds stays near 0")
    func drawIsNotTheJoinOrder() throws {
        // Spearman's rho of a uniform permutation of n has standard deviation 1/sqrt(n-1) (0.022
        // for n = 2000); |rho| > 0.15 is over 6.7 deviations: probability below 1e-10 a seed.
        // The seeds are fixed, so this is deterministic; the live test draws with a random one.
        for index in 0..<50 {
            var hex = ""
            var value = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 | 1
            for _ in 0..<4 {
                value = value &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                hex += String(String(value, radix: 16).suffix(16)).leftPadded(16)
            }
            let order = try #require(QueueOrder(seedHex: hex, count: 2000))
            let rho = Self.spearman((1...2000).map { Double(order.place(ofJoin: $0)) })
            #expect(abs(rho) < 0.15, "seed \(index): rho \(rho)")
        }
    }

    /// Spearman's rho between 1...n and `places` (a permutation of 1...n).
    static func spearman(_ places: [Double]) -> Double {
        let n = Double(places.count)
        let sum = places.enumerated().reduce(0.0) { total, item in
            let difference = Double(item.offset + 1) - item.element
            return total + difference * difference
        }
        return 1 - 6 * sum / (n * (n * n - 1))
    }

    @Test("the schedule: places admitted by a time and each place's admission time agree, in whole minutes and the rest")
    func scheduleArithmetic() {
        for perMinute in [Int64(1), 7, 60, 600, 59_999, 1_000_000] {
            let schedule = RoomSchedule(base: 5, baseAdmittedAt: 1_000, since: 10_000, perMinute: perMinute, expiredThrough: 0)
            #expect(schedule.admitted(at: 9_000) == 5 && schedule.admitted(at: 10_000) == 5)
            for place in Int64(6)...Int64(200) {
                let at = schedule.admittedAt(place: place) ?? -1
                #expect(schedule.admitted(at: at) >= place && schedule.admitted(at: at - 1) < place, "rate \(perMinute) place \(place)")
            }
            #expect(schedule.admittedAt(place: 3) == 1_000)
            // years out, no overflow
            #expect(schedule.admitted(at: BasketSettings.latestMilliseconds) > 0)
        }
        let stopped = RoomSchedule(base: 4, baseAdmittedAt: 500, since: nil, perMinute: 60, expiredThrough: 0)
        #expect(stopped.admitted(at: 1_000_000_000) == 4 && stopped.admittedAt(place: 5) == nil && stopped.admittedAt(place: 4) == 500)
    }

    static func snapshot(
        stock: Int = 5, pending: Int = 0, opens: Int64? = 10_000, closes: Int64? = nil, preQueue: Int64? = 3, joined: Int64 = 6,
        schedule: RoomSchedule = RoomSchedule(base: 0, baseAdmittedAt: 0, since: 10_000, perMinute: 60, expiredThrough: 0)
    ) -> RoomSnapshot {
        let settings = BasketSettings(
            holdSeconds: 60, maxPerConsumer: 1, opensAtMilliseconds: opens, closesAtMilliseconds: closes,
            waitingRoom: WaitingRoomSettings(admitPerMinute: 60, admissionSeconds: 30))
        let basket = BasketState(stock: stock, pending: pending, confirmed: 0, capacity: stock + pending, settings: settings)
        let room = RoomRecord(
            epoch: epoch, joined: joined, preQueue: preQueue, seed: preQueue == nil ? nil : seed, drawnAtMilliseconds: preQueue == nil ? nil : 10_000,
            schedule: schedule)
        return RoomSnapshot(basket: basket, room: room, members: joined, observedAtMilliseconds: 10_000)
    }

    static func ticket(join: Int64, place: Int64 = 0) -> Ticket {
        Ticket(basketId: "b", consumerId: "c\(join)", epoch: epoch, join: join, place: place, expiresAtMilliseconds: 99_000_000)
    }

    @Test("a ticket's view: pre-queue, waiting with its position, admitted until its admission expires, then expired")
    func views() throws {
        let before = QueueView.decide(Self.ticket(join: 1), in: Self.snapshot(preQueue: nil), at: 5_000)
        #expect(before.state == .prequeue && before.position == nil && before.admission == nil && before.opensAtMilliseconds == 10_000)
        // After the draw: the pre-queue's three places are a permutation, later joins follow.
        let snapshot = Self.snapshot()
        let order = try #require(QueueOrder(seedHex: Self.seed, count: 3))
        var places: [Int64] = []
        for join in Int64(1)...6 {
            let view = QueueView.decide(Self.ticket(join: join), in: snapshot, at: 10_000)
            #expect(view.state == .waiting)
            #expect(view.ticket.place == (join <= 3 ? order.place(ofJoin: join) : join), "the place is fixed into the ticket handed back")
            #expect(view.position == view.ticket.place && view.estimatedWaitSeconds == view.ticket.place)
            places.append(view.ticket.place)
        }
        #expect(Set(places) == Set(1...6))
        // A place fixed by another draw (the room drawn again) is computed afresh.
        var stale = QueueView.decide(Self.ticket(join: 2), in: snapshot, at: 10_000).ticket
        #expect(stale.drawTag == String(Self.seed.prefix(16)))
        stale.place = 99
        #expect(QueueView.decide(stale, in: snapshot, at: 10_000).ticket.place == 99, "the same draw: kept")
        stale.drawTag = String(repeating: "e", count: 16)
        #expect(QueueView.decide(stale, in: snapshot, at: 10_000).ticket.place == order.place(ofJoin: 2))
        // One a second at 60 a minute: place 4 is admitted at 14 s, for 30 s.
        let four = Self.ticket(join: 4)
        #expect(QueueView.decide(four, in: snapshot, at: 13_999).position == 1)
        let admitted = QueueView.decide(four, in: snapshot, at: 14_000)
        #expect(admitted.state == .admitted && admitted.admission?.expiresAtMilliseconds == 44_000 && admitted.admission?.epoch == Self.epoch)
        #expect(admitted.admission?.consumerId == "c4" && admitted.admission?.basketId == "b")
        #expect(QueueView.decide(four, in: snapshot, at: 43_999).state == .admitted)
        #expect(QueueView.decide(four, in: snapshot, at: 44_000).state == .expired)
        // Expired by a restart of the schedule (kept in `expiredThrough`), whatever the clock says.
        var restarted = snapshot
        restarted.room.schedule = RoomSchedule(base: 6, baseAdmittedAt: 20_000, since: 30_000, perMinute: 60, expiredThrough: 4)
        #expect(QueueView.decide(four, in: restarted, at: 30_000).state == .expired)
        #expect(QueueView.decide(Self.ticket(join: 5), in: restarted, at: 30_000).state == .admitted)
    }

    @Test("a snapshot never admits more places than it has seen handed out (a join it has not seen waits)")
    func admittedIsCappedByJoined() {
        // The schedule has run far past the 6 places handed out.
        let snapshot = Self.snapshot(schedule: RoomSchedule(base: 0, baseAdmittedAt: 0, since: 0, perMinute: 60_000, expiredThrough: 0))
        #expect(QueueView.decide(Self.ticket(join: 6), in: snapshot, at: 10_000).state == .admitted)
        let unseen = QueueView.decide(Self.ticket(join: 9), in: snapshot, at: 10_000)
        #expect(unseen.state == .waiting && unseen.position == 3 && unseen.admission == nil)
    }

    @Test("closed and sold out reach every ticket; a unit still held keeps the queue waiting")
    func closedAndSoldOut() {
        for join in Int64(1)...6 {
            let ticket = Self.ticket(join: join)
            #expect(QueueView.decide(ticket, in: Self.snapshot(closes: 20_000), at: 20_000).state == .closed)
            #expect(QueueView.decide(ticket, in: Self.snapshot(stock: 0, pending: 0), at: 10_000).state == .soldOut)
            #expect(QueueView.decide(ticket, in: Self.snapshot(stock: 0, pending: 0, preQueue: nil), at: 1_000).state == .soldOut)
            #expect(QueueView.decide(ticket, in: Self.snapshot(stock: 0, pending: 1), at: 10_000).state != .soldOut)
        }
    }

    @Test("polls are advised within 1...30 s, later for a longer wait, spread by the ticket")
    func refreshAdvice() {
        var advice = Set<Int>()
        for join in Int64(1)...200 {
            let near = QueueView.decide(Self.ticket(join: join), in: Self.snapshot(joined: 200), at: 10_000)
            #expect((1...30).contains(near.refreshAfterSeconds))
            advice.insert(near.refreshAfterSeconds)
        }
        #expect(advice.count > 5, "spread: \(advice)")
        let far = QueueView.decide(Self.ticket(join: 1), in: Self.snapshot(preQueue: nil), at: -10_000_000)
        #expect(far.refreshAfterSeconds >= 24)
    }

    @Test("tickets and admissions: signed, checked in full, and never one for the other")
    func passes() throws {
        let passes = RoomPasses(secret: Array("test-secret".utf8))
        let ticket = Ticket(
            basketId: "b-1", consumerId: "alice@x", epoch: Self.epoch, join: 12, place: 7, expiresAtMilliseconds: 1_800_000_000_000,
            drawTag: "0123456789abcdef")
        let text = passes.sign(ticket)
        #expect(passes.ticket(text) == ticket)
        let admission = Admission(basketId: "b-1", consumerId: "alice@x", epoch: Self.epoch, expiresAtMilliseconds: 1_800_000_000_000)
        let admitted = passes.sign(admission)
        #expect(passes.admission(admitted) == admission)
        // neither passes for the other, nor under another secret
        #expect(passes.admission(text) == nil && passes.ticket(admitted) == nil)
        let other = RoomPasses(secret: Array("other-secret".utf8))
        #expect(other.ticket(text) == nil && other.admission(admitted) == nil)
        // any byte changed, dropped or added is refused
        let bytes = Array(text.utf8)
        for index in bytes.indices {
            var changed = bytes
            changed[index] = changed[index] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            #expect(passes.ticket(String(decoding: changed, as: UTF8.self)) == nil, "byte \(index)")
            var dropped = bytes
            dropped.remove(at: index)
            #expect(passes.ticket(String(decoding: dropped, as: UTF8.self)) == nil)
        }
        for bad in ["", ".", "t1..", "t1.\(text)", text + ".", text + "A", String(repeating: "t1.", count: 500), "a1.x.y", "t1"] {
            #expect(passes.ticket(bad) == nil && passes.admission(bad) == nil)
        }
        // A forged pass built the way ours are, with a guessed MAC, is refused.
        let body = text.split(separator: ".").prefix(2).joined(separator: ".")
        #expect(passes.ticket(body + "." + String(repeating: "A", count: 43)) == nil)
    }
}

extension String {
    fileprivate func leftPadded(_ count: Int) -> String { String(repeating: "0", count: Swift.max(0, count - self.count)) + self }
}
