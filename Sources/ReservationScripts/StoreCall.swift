public import NIOCore
public import RedisClient
import ReservationCore

/// One typed call to the reservation store: the keys it touches (every one of them, so a
/// Cluster client can route by them and a test can check they share one slot) and how its reply
/// becomes a domain outcome. Scripts and plain commands both conform.
public protocol StoreCall: Sendable {
    associatedtype Outcome: Sendable
    /// Every key the call reads or writes.
    var keys: [String] { get }
    /// Turns the reply into the outcome; a reply of the wrong shape throws `StoreReplyError`.
    static func decode(_ reply: RedisValue) throws -> Outcome
    /// Whether the call may change state, and which of its replies must be held until the
    /// Redis primary's replicas have it (`REDIS_WAIT_REPLICAS`): its changes, and the answers
    /// that state a change a client will rely on (a replayed grant, a repeated cancel, a
    /// duplicate payment). Refusals that changed nothing are not held. Default: a script may
    /// write (every reply held), a plain command is a read.
    static var replication: RedisReplication { get }
}

extension ScriptCall {
    public static var replication: RedisReplication { .always }
}

extension CommandCall {
    public static var replication: RedisReplication { .none }
}

extension RedisValue {
    /// Whether this is a script's array answer whose first element is one of `words` (compared
    /// as bytes: this runs on every reply of the hot path).
    static func isAnswer(_ reply: RedisValue, oneOf words: StaticString...) -> Bool {
        // The same words `answer(of:)` reads (a status reply too), so what decodes as a grant is
        // always held for WAIT and marked when it is not replicated.
        guard case .array(let values) = reply, let head = values.first else { return false }
        for word in words {
            let matches: Bool
            switch head {
            case .bulk(let first): matches = word.withUTF8Buffer { first.elementsEqual($0) }
            case .status(let text): matches = word.withUTF8Buffer { text.utf8.elementsEqual($0) }
            default: matches = false
            }
            if matches { return true }
        }
        return false
    }
}

/// A call of one Lua script of `lua/`. Its header declares KEYS and ARGV by name; `keyNames` and
/// `argumentNames` repeat those names here, and a unit test holds the two side by side.
public protocol ScriptCall: StoreCall {
    static var script: RedisScript { get }
    /// KEYS by name, as the script's header declares them, then `repeatedKeyNames` once per item.
    static var keyNames: [String] { get }
    static var repeatedKeyNames: [String] { get }
    /// ARGV by name, likewise.
    static var argumentNames: [String] { get }
    static var repeatedArgumentNames: [String] { get }
    /// ARGV, in the order of `argumentNames`.
    var arguments: [RedisArgument] { get }
}

extension ScriptCall {
    public static var repeatedKeyNames: [String] { [] }
    public static var repeatedArgumentNames: [String] { [] }
}

/// A call of one plain Redis command.
public protocol CommandCall: StoreCall {
    var command: [RedisArgument] { get }
}

/// A reply the store's code does not know how to read: a script and its contract disagree, or
/// the data in Redis is corrupt. Names the call and the reply's leading word only.
public struct StoreReplyError: Error, Sendable, Equatable, CustomStringConvertible {
    public let call: String
    public let reply: String

    public init(_ call: String, _ reply: RedisValue) {
        self.call = call
        switch reply {
        case .array(let values): self.reply = values.first?.string.map { "[\($0), ...]" } ?? "array"
        case .null: self.reply = "nil"
        default: self.reply = reply.string.map { String($0.prefix(32)) } ?? "value"
        }
    }

    public var description: String { "unexpected reply to \(call): \(reply)" }
}

extension RedisClient {
    /// Runs a script call and decodes its reply. With `eventLoop` (the caller's own loop) the
    /// future completes on it without a hop.
    public func run<Call: ScriptCall>(_ call: Call, on eventLoop: (any EventLoop)? = nil) -> EventLoopFuture<Call.Outcome> {
        evalSHA(Call.script, keys: call.keys, arguments: call.arguments, on: eventLoop, replication: Call.replication)
            .flatMapThrowing { try Call.decode($0) }
    }

    public func run<Call: CommandCall>(_ call: Call, on eventLoop: (any EventLoop)? = nil) -> EventLoopFuture<Call.Outcome> {
        send(call.command, on: eventLoop, replication: Call.replication).flatMapThrowing { try Call.decode($0) }
    }

    public func run<Call: ScriptCall>(_ call: Call) async throws -> Call.Outcome {
        try await run(call, on: nil).get()
    }

    public func run<Call: CommandCall>(_ call: Call) async throws -> Call.Outcome {
        try await run(call, on: nil).get()
    }
}

extension RedisValue {
    /// The elements of an array reply whose first element is one of the script's answer words.
    func answer(of call: String) throws -> (String, [RedisValue]) {
        guard let values = array, let word = values.first?.string else { throw StoreReplyError(call, self) }
        return (word, Array(values.dropFirst()))
    }
}

extension ReservationRecord {
    /// A record from values in `ReservationField.allCases` order (an HMGET or a script's reply).
    init?(values: ArraySlice<RedisValue>) {
        guard values.count >= ReservationField.allCases.count else { return nil }
        let start = values.startIndex
        self.init { field in
            values[start + (ReservationField.allCases.firstIndex(of: field) ?? 0)].string
        }
    }
}

extension BasketState {
    /// A state from values in `BasketField.allCases` order.
    init?(values: ArraySlice<RedisValue>) {
        guard values.count >= BasketField.allCases.count else { return nil }
        let start = values.startIndex
        self.init { field in
            values[start + (BasketField.allCases.firstIndex(of: field) ?? 0)].string
        }
    }
}
