/// Where and how to reach Redis. Parsed once from `REDIS_URL`.
public struct RedisConfiguration: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var password: String?
    public var database: Int
    /// How long a TCP connect may take before it fails. Default 2 s.
    public var connectTimeout: Duration
    /// How long a batch may wait for its replies before the connection is reset. Default 5 s.
    public var commandTimeout: Duration
    /// Connections per event loop. Default 1: commands are pipelined, so one is enough.
    public var connectionsPerEventLoop: Int
    /// Calls a connection may hold (queued plus in flight) before new ones fail at once with
    /// `overloaded`, instead of waiting behind a growing queue. Default: no bound (the gateway
    /// sets one; a batch process like the reconciler would only retry a refusal).
    public var maxPendingCommands: Int = .max
    /// When the batch on the wire has waited this long for Redis, new calls fail at once with
    /// `overloaded` until Redis answers again. Default nil: off (the gateway turns it on).
    public var shedAfter: Duration?
    /// How long a batch waits for more calls before it is written, when nothing is in flight.
    /// Default zero: at the end of the event loop's current turn. Under `appendfsync always`
    /// every batch costs Redis an fsync; waiting a little for the clients of the batch just
    /// answered merges them into the next one (see the README's figures).
    public var batchDelay: Duration = .zero
    /// The seeds of a Redis Cluster, when `REDIS_URL` lists more than one; empty for a single
    /// server (then no cluster command is ever sent).
    public var clusterSeeds: [RedisNode] = []
    /// How often a cluster client asks for the slot map even when no reply said it changed.
    public var clusterRefreshInterval: Duration = .seconds(30)
    /// `REDIS_WAIT_REPLICAS`: when ≥ 1, every batch that may change state is followed by
    /// `WAIT waitReplicas waitTimeout` on its connection, and the replies of its state changes
    /// are handed over only once that many replicas hold them (else `RedisError.notReplicated`;
    /// see `RedisReplication`). Default 0: no `WAIT`.
    public var waitReplicas: Int = 0
    /// `REDIS_WAIT_TIMEOUT_MS`: how long that `WAIT` waits. Default 200 ms. It is part of the
    /// batch, so it must stay below `commandTimeout`.
    public var waitTimeout: Duration = .milliseconds(200)

    public var isCluster: Bool { !clusterSeeds.isEmpty }

    public init(
        host: String = "127.0.0.1", port: Int = 6379, password: String? = nil, database: Int = 0,
        connectTimeout: Duration = .seconds(2), commandTimeout: Duration = .seconds(5),
        connectionsPerEventLoop: Int = 1
    ) {
        self.host = host
        self.port = port
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.connectionsPerEventLoop = connectionsPerEventLoop
    }

    /// Parses `redis://[:password@]host:port[/db]`, or a comma-separated list of such URLs: the
    /// seeds of a Redis Cluster (the password of the first applies to all; no database number).
    public init(url: String) throws {
        self.init()
        let seeds = url.split(separator: ",").map { $0.trimmingSpaces() }
        if seeds.count > 1 {
            var nodes: [RedisNode] = []
            for seed in seeds {
                let parsed = try RedisConfiguration(url: String(seed))
                guard parsed.database == 0 else { throw RedisError.invalidURL("a cluster has no database numbers") }
                nodes.append(RedisNode(host: parsed.host, port: parsed.port))
            }
            try self.init(url: String(seeds[0]))
            clusterSeeds = nodes
            return
        }
        let first = seeds.first.map(String.init) ?? url
        guard first.hasPrefix("redis://") else { throw RedisError.invalidURL("expected redis://host:port") }
        var rest = Substring(first.dropFirst("redis://".count))
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            // `:password` or `user:password`; ACL users are not supported, only the password is used.
            if let colon = credentials.firstIndex(of: ":") {
                let secret = credentials[credentials.index(after: colon)...]
                password = secret.isEmpty ? nil : String(secret).removingPercentEncodingIfPossible()
            } else if !credentials.isEmpty {
                password = String(credentials).removingPercentEncodingIfPossible()
            }
        }
        var hostPort = rest
        if let slash = rest.firstIndex(of: "/") {
            hostPort = rest[..<slash]
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty {
                guard let number = Int(db), number >= 0 else { throw RedisError.invalidURL("database must be a number") }
                database = number
            }
        }
        if let colon = hostPort.lastIndex(of: ":") {
            host = String(hostPort[..<colon])
            guard let number = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(number) else {
                throw RedisError.invalidURL("port must be 1...65535")
            }
            port = number
        } else {
            host = String(hostPort)
        }
        if host.isEmpty { host = "127.0.0.1" }
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var text = self
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return text
    }
}

extension String {
    /// Decodes `%XX` escapes (passwords in URLs may hold reserved characters).
    func removingPercentEncodingIfPossible() -> String {
        guard contains("%") else { return self }
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
