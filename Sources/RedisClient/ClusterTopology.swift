/// One Redis server of a cluster, as `CLUSTER SLOTS` and redirections name it.
public struct RedisNode: Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (the form of MOVED and ASK replies); the host may be an IPv6 literal.
    public init?(_ text: Substring) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            return nil
        }
        let host = text[..<colon]
        guard !host.isEmpty else { return nil }
        self.init(host: String(host), port: port)
    }

    public var description: String { "\(host):\(port)" }
}

/// Which primary serves each of the cluster's 16,384 slots. A plain value: the client swaps it
/// whole on a refresh and patches one slot on a `MOVED`.
public struct ClusterSlotMap: Sendable, Equatable {
    private var owners: [RedisNode?]

    public init() {
        owners = Array(repeating: nil, count: RedisHashSlot.count)
    }

    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...], replicas...], ...]`.
    /// An empty host (a node that does not know its own address) keeps the address it was asked at.
    public init(clusterSlots reply: RedisValue, askedAt node: RedisNode) throws {
        self.init()
        guard let ranges = reply.array else { throw RedisError.protocolError("CLUSTER SLOTS answered no array") }
        for range in ranges {
            guard let fields = range.array, fields.count >= 3, let start = fields[0].int, let end = fields[1].int,
                let primary = fields[2].array, primary.count >= 2, let port = primary[1].int,
                0 <= start, start <= end, end < RedisHashSlot.count, (1...65535).contains(port)
            else { throw RedisError.protocolError("CLUSTER SLOTS answered a malformed range") }
            let host = primary[0].string.flatMap { $0.isEmpty || $0 == "?" ? nil : $0 } ?? node.host
            let owner = RedisNode(host: host, port: port)
            for slot in start...end { owners[slot] = owner }
        }
    }

    public func node(forSlot slot: Int) -> RedisNode? {
        guard slot >= 0, slot < owners.count else { return nil }
        return owners[slot]
    }

    public mutating func assign(slot: Int, to node: RedisNode) {
        guard slot >= 0, slot < owners.count else { return }
        owners[slot] = node
    }

    /// Every node that serves at least one slot.
    public var primaries: Set<RedisNode> { Set(owners.compactMap { $0 }) }

    public var isEmpty: Bool { owners.allSatisfy { $0 == nil } }
}

/// What a cluster error reply asks of the client. Every case here is a reply to a command that
/// did not run (Redis redirects or refuses before executing), so following it never applies a
/// command twice.
public enum ClusterRedirect: Sendable, Equatable {
    /// The slot lives on `node` for good: update the map, send there.
    case moved(slot: Int, node: RedisNode)
    /// The slot is migrating and this key is on `node` already: send there once, after `ASKING`.
    case ask(slot: Int, node: RedisNode)
    /// Not now (`TRYAGAIN` during a migration, `CLUSTERDOWN`, `LOADING`, `MASTERDOWN`, or
    /// `READONLY` from a primary that was demoted): back off, refresh the map, try again.
    case retryLater
    /// Not a cluster answer: the caller gets the error as it is.
    case none

    public init(_ error: any Error) {
        guard let error = error as? RedisError, case .server(let message) = error else {
            self = .none
            return
        }
        let parts = message.split(separator: " ")
        switch parts.first {
        case "MOVED", "ASK":
            guard parts.count >= 3, let slot = Int(parts[1]), slot >= 0, slot < RedisHashSlot.count, let node = RedisNode(parts[2]) else {
                self = .none
                return
            }
            self = parts[0] == "MOVED" ? .moved(slot: slot, node: node) : .ask(slot: slot, node: node)
        case "TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY":
            self = .retryLater
        default:
            self = .none
        }
    }
}

/// Where a command goes in a cluster: the slot of the keys it names. Every script call of the
/// product names all its keys (one slot, checked by a test of each contract), so the first key
/// decides; plain commands name their key in a known place.
public enum ClusterRouting {
    /// The slot of `command`, or nil when it names no key (any node will do).
    public static func slot(of command: [RedisArgument]) -> Int? {
        guard let name = command.first.map(text)?.uppercased() else { return nil }
        switch name {
        case "EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL":
            guard command.count > 3, let count = Int(text(command[2])), count > 0 else { return nil }
            return RedisHashSlot.slot(of: text(command[3]))
        case "XREAD", "XREADGROUP":
            guard let streams = command.firstIndex(where: { text($0).uppercased() == "STREAMS" }), streams + 1 < command.count else {
                return nil
            }
            return RedisHashSlot.slot(of: text(command[streams + 1]))
        case "XINFO", "XGROUP":
            return command.count > 2 ? RedisHashSlot.slot(of: text(command[2])) : nil
        case "SCAN":
            // A pattern with a hash tag names one slot: the scan goes to the node that has it.
            guard let match = command.firstIndex(where: { text($0).uppercased() == "MATCH" }), match + 1 < command.count else { return nil }
            let pattern = text(command[match + 1])
            guard pattern.contains("{"), pattern.contains("}") else { return nil }
            return RedisHashSlot.slot(of: pattern)
        case "PING", "TIME", "INFO", "SCRIPT", "FLUSHALL", "FLUSHDB", "CLUSTER", "ASKING", "CONFIG", "DBSIZE", "READONLY", "AUTH", "SELECT":
            return nil
        default:
            return command.count > 1 ? RedisHashSlot.slot(of: text(command[1])) : nil
        }
    }

    static func text(_ argument: RedisArgument) -> String {
        switch argument {
        case .string(let value): return value
        case .bytes(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .int(let value): return String(value)
        }
    }
}
