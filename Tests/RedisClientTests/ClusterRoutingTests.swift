import Testing

@testable import RedisClient

/// The cluster client's decisions, without a cluster: which slot a command goes to, how a slot
/// map is read, and what each cluster answer asks for.
@Suite("Cluster routing")
struct ClusterRoutingTests {
    @Test("a command goes to the slot of its key, wherever the command keeps it")
    func slots() {
        let key = "{rg05}:b:basket-1"
        let slot = RedisHashSlot.slot(of: key)
        #expect(slot == RedisHashSlot.slot(of: "rg05"))
        #expect(ClusterRouting.slot(of: ["EVALSHA", "abc", 2, .string(key), "{rg05}:holds", "arg"]) == slot)
        #expect(ClusterRouting.slot(of: ["EVALSHA", "abc", 0, "arg"]) == nil, "a script with no keys goes anywhere")
        #expect(ClusterRouting.slot(of: ["HMGET", .string(key), "stock"]) == slot)
        #expect(ClusterRouting.slot(of: ["hset", .string(key), "stock", 1]) == slot, "names are case-insensitive")
        #expect(
            ClusterRouting.slot(of: ["XREADGROUP", "GROUP", "g", "c", "COUNT", 5, "STREAMS", "{rg05}:events", ">"])
                == RedisHashSlot.slot(of: "{rg05}:events"))
        #expect(ClusterRouting.slot(of: ["XINFO", "GROUPS", "{rg07}:events"]) == RedisHashSlot.slot(of: "rg07"))
        #expect(ClusterRouting.slot(of: ["XGROUP", "CREATE", "{rg07}:events", "g", "0", "MKSTREAM"]) == RedisHashSlot.slot(of: "rg07"))
        #expect(ClusterRouting.slot(of: ["SCAN", "0", "MATCH", "{rg09}:r:*", "COUNT", 1000]) == RedisHashSlot.slot(of: "rg09"))
        #expect(ClusterRouting.slot(of: ["SCAN", "0", "MATCH", "*"]) == nil)
        for keyless in [["PING"], ["TIME"], ["INFO", "server"], ["SCRIPT", "LOAD", "return 1"], ["CLUSTER", "SLOTS"]] as [[RedisArgument]] {
            #expect(ClusterRouting.slot(of: keyless) == nil)
        }
        #expect(ClusterRouting.slot(of: []) == nil)
    }

    @Test("a CLUSTER SLOTS reply becomes a map of every slot; malformed ones are refused")
    func slotMap() throws {
        func node(_ host: String, _ port: Int) -> RedisValue {
            .array([.bulk(Array(host.utf8)), .integer(Int64(port)), .bulk(Array("id".utf8))])
        }
        let reply = RedisValue.array([
            .array([.integer(0), .integer(5460), node("127.0.0.1", 7000), node("127.0.0.1", 7003)]),
            .array([.integer(5461), .integer(10922), node("", 7001)]),
            .array([.integer(10923), .integer(16383), node("10.0.0.3", 7002)]),
        ])
        let asked = RedisNode(host: "127.0.0.9", port: 7001)
        let map = try ClusterSlotMap(clusterSlots: reply, askedAt: asked)
        #expect(map.node(forSlot: 0) == RedisNode(host: "127.0.0.1", port: 7000))
        #expect(map.node(forSlot: 5460) == RedisNode(host: "127.0.0.1", port: 7000))
        #expect(map.node(forSlot: 5461) == RedisNode(host: "127.0.0.9", port: 7001), "an empty host is the node asked")
        #expect(map.node(forSlot: 16383) == RedisNode(host: "10.0.0.3", port: 7002))
        #expect(map.node(forSlot: 16384) == nil && map.node(forSlot: -1) == nil)
        #expect(map.primaries.count == 3)
        var patched = map
        patched.assign(slot: 42, to: RedisNode(host: "127.0.0.1", port: 7002))
        #expect(patched.node(forSlot: 42)?.port == 7002 && patched.node(forSlot: 43)?.port == 7000)

        for bad in [
            RedisValue.status("OK"),
            .array([.array([.integer(0), .integer(16384), node("h", 1)])]),
            .array([.array([.integer(10), .integer(5), node("h", 1)])]),
            .array([.array([.integer(0), .integer(5), node("h", 0)])]),
            .array([.array([.integer(0), .integer(5)])]),
        ] {
            #expect(throws: RedisError.self) { try ClusterSlotMap(clusterSlots: bad, askedAt: asked) }
        }
        #expect(ClusterSlotMap().isEmpty)
    }

    @Test("cluster answers: MOVED and ASK name a node, the not-now answers retry, the rest pass through")
    func redirects() {
        #expect(
            ClusterRedirect(RedisError.server("MOVED 3999 127.0.0.1:6381")) == .moved(slot: 3999, node: RedisNode(host: "127.0.0.1", port: 6381)))
        #expect(ClusterRedirect(RedisError.server("ASK 3999 10.1.2.3:7000")) == .ask(slot: 3999, node: RedisNode(host: "10.1.2.3", port: 7000)))
        #expect(ClusterRedirect(RedisError.server("MOVED 1 [::1]:7000")) == .moved(slot: 1, node: RedisNode(host: "[::1]", port: 7000)))
        for notNow in [
            "TRYAGAIN Multiple keys request during rehashing of slot", "CLUSTERDOWN The cluster is down", "LOADING", "READONLY You can't write",
        ] {
            #expect(ClusterRedirect(RedisError.server(notNow)) == .retryLater)
        }
        for other in ["MOVED", "MOVED x 1.2.3.4:5", "MOVED 99999 1.2.3.4:5", "MOVED 1 nohost", "ERR wrong", "NOSCRIPT No matching script"] {
            #expect(ClusterRedirect(RedisError.server(other)) == .none, "\(other)")
        }
        #expect(ClusterRedirect(RedisError.connectionClosed) == .none, "a command in flight on a dropped connection is never retried")
    }

    @Test("REDIS_URL with several seeds is a cluster; one URL is a single server")
    func configuration() throws {
        let single = try RedisConfiguration(url: "redis://:secret@10.0.0.1:6380/2")
        #expect(!single.isCluster && single.host == "10.0.0.1" && single.port == 6380 && single.database == 2 && single.password == "secret")
        let cluster = try RedisConfiguration(url: "redis://:pw@127.0.0.1:7000, redis://127.0.0.1:7001,redis://127.0.0.1:7002")
        #expect(cluster.isCluster && cluster.password == "pw")
        #expect(cluster.clusterSeeds == [7000, 7001, 7002].map { RedisNode(host: "127.0.0.1", port: $0) })
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://127.0.0.1:7000,redis://127.0.0.1:7001/3") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://127.0.0.1:7000,http://127.0.0.1:7001") }
    }
}
