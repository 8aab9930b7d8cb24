// Benchmark-only: what bench/ sends to Redis, built by the project's own call types (no copy of
// keys, arguments or script sources in Python).
//   bench-scripts source <script>                     the script as Redis runs it (prelude + file)
//   bench-scripts join <file.lua>                     any Lua file joined to the prelude beside it, the same way
//   bench-scripts reserve <basket> <attemptsPerSecond> [<count>]
//                                                     the keys and arguments of a reserve call of
//                                                     <count> requests (default 1) as JSON, with
//                                                     redis-benchmark's __rand_int__ in each consumer
//                                                     and reservation id (new ones per call)
//   bench-scripts create <basket> <stock>              CreateBasketCall's keys and arguments as JSON
//   bench-scripts keys <basket>...                     each basket's partition, basket key, stream, index
//   bench-scripts streams                              every partition's stream key
//   bench-scripts tokens hs256|es256 <count> <file>     <count> consumer tokens, one per line, into
//                                                     <file> (a fixed bench key: prints the
//                                                     CONSUMER_TOKEN_KEYS value, or writes <file>.jwks)
import ConsumerTokens
import Crypto
import Foundation
import RedisClient
import ReservationCore
import ReservationScripts

@main
enum BenchScripts {
    static func main() throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        switch (arguments.first, arguments.count) {
        case ("source", 2):
            guard let script = ReservationScripts.all.first(where: { $0.name == arguments[1] }) else { fail("no script \(arguments[1])") }
            print(script.source, terminator: "")
        case ("join", 2):
            // both from disk (the prelude beside the file), joined as the build joins them
            let own = try String(contentsOfFile: arguments[1], encoding: .utf8)
            let preludePath = URL(fileURLWithPath: arguments[1]).deletingLastPathComponent().appendingPathComponent("prelude.lua").path
            let prelude = (try? String(contentsOfFile: preludePath, encoding: .utf8)) ?? ReservationScripts.prelude
            print(ReservationScripts.joined(own: own, prelude: prelude), terminator: "")
        case ("reserve", 3), ("reserve", 4):
            let basketId = arguments[1]
            guard let limit = Int(arguments[2]), limit >= 0 else { fail("attemptsPerSecond: a number >= 0") }
            guard let count = arguments.count == 4 ? Int(arguments[3]) : 1, (1...ReserveBatchCall.maxRequests).contains(count) else {
                fail("requests per call: 1 to \(ReserveBatchCall.maxRequests)")
            }
            let partition = Keyspace.partition(ofBasket: basketId)
            let prefix = String(format: "%02d", partition)
            let requests = (0..<count).map { _ in
                ReserveCall(
                    basketId: basketId, consumerId: "c__rand_int__", quantity: 1, reservationId: "\(prefix)-rb-__rand_int__",
                    attemptsPerSecond: limit, idempotencyKey: nil)
            }
            let call = ReserveBatchCall(requests)
            let object: [String: Any] = [
                "keys": call.keys, "arguments": call.arguments.map(text), "basketKey": Keyspace.basket(basketId, partition: partition),
                "streamKey": Keyspace.stream(partition),
            ]
            try printJSON(object)
        case ("create", 3):
            guard let stock = Int(arguments[2]), stock >= 0 else { fail("stock: a number >= 0") }
            let call = CreateBasketCall(basketId: arguments[1], stock: stock, holdSeconds: 600, maxPerConsumer: 1)
            try printJSON(["keys": call.keys, "arguments": call.arguments.map(text)])
        case ("keys", _) where arguments.count > 1:
            try printJSON(
                arguments.dropFirst().map { basketId -> [String: Any] in
                    let partition = Keyspace.partition(ofBasket: basketId)
                    return [
                        "basket": basketId, "partition": partition, "basketKey": Keyspace.basket(basketId, partition: partition),
                        "streamKey": Keyspace.stream(partition), "basketIndexKey": Keyspace.basketIndex(partition),
                    ]
                })
        case ("tokens", 4):
            guard let count = Int(arguments[2]), count > 0, count <= 10_000_000 else { fail("count: 1 to 10,000,000") }
            let secret = Array(repeating: UInt8(42), count: 32)
            let keys = try ConsumerTokenKeys(hs256: "bench:" + ConsumerTokenMinter.base64url(secret), jwksJSON: nil)
            let esKey = try P256.Signing.PrivateKey(rawRepresentation: Array(repeating: UInt8(5), count: 32))
            let now = Int64(Date().timeIntervalSince1970)
            var lines = ""
            lines.reserveCapacity(count * 260)
            for index in 0..<count {
                let payload = #"{"sub":"\#(arguments[1])-\#(index)","exp":\#(now + 86_400)}"#
                switch arguments[1] {
                case "hs256":
                    lines += ConsumerTokenMinter.sign(
                        header: #"{"alg":"HS256","kid":"bench"}"#, payload: payload, hs256Secret: SymmetricKey(data: secret))
                case "es256":
                    lines += ConsumerTokenMinter.sign(header: #"{"alg":"ES256","kid":"bench-es"}"#, payload: payload, es256: esKey)
                default: fail("hs256 or es256")
                }
                lines += "\n"
            }
            try lines.write(toFile: arguments[3], atomically: true, encoding: .utf8)
            if arguments[1] == "es256" {
                try ConsumerTokenMinter.jwks([(kid: "bench-es", key: esKey.publicKey)]).write(
                    toFile: arguments[3] + ".jwks", atomically: true, encoding: .utf8)
            } else {
                print("bench:" + ConsumerTokenMinter.base64url(secret))
            }
            _ = keys
        case ("streams", 1):
            try printJSON((0..<Keyspace.partitionCount).map(Keyspace.stream))
        default:
            fail(
                "usage: bench-scripts source <script> | join <file.lua> | reserve <basket> <limit> | create <basket> <stock> | keys <basket>... | streams"
            )
        }
    }

    static func printJSON(_ object: Any) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }

    static func text(_ argument: RedisArgument) -> String {
        switch argument {
        case .string(let text): return text
        case .bytes(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .int(let value): return String(value)
        }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data((message + "\n").utf8))
        exit(2)
    }
}
