import NIOCore
import Testing

@testable import RedisClient

/// hiredis' reply reader, fed bytes directly: every type, replies split at every byte, and
/// bytes that are not RESP.
@Suite("Reply reader")
struct ReplyReaderTests {
    static let stream = "+OK\r\n-ERR bad\r\n:-42\r\n$5\r\nhe\0lo\r\n$-1\r\n*3\r\n:1\r\n*1\r\n$0\r\n\r\n*-1\r\n"
    static let expected: [RedisValue] = [
        .status("OK"), .error("ERR bad"), .integer(-42), .bulk(Array("he\0lo".utf8)), .null,
        .array([.integer(1), .array([.bulk([])]), .null]),
    ]

    @Test("every reply type decodes, whether the bytes come at once or one by one")
    func everyType() throws {
        let bytes = Array(Self.stream.utf8)
        for chunk in [bytes.count, 1, 3, 7] {
            let reader = RedisReplyReader()
            var replies: [RedisValue] = []
            for start in stride(from: 0, to: bytes.count, by: chunk) {
                try reader.feed(ByteBuffer(bytes: bytes[start..<min(start + chunk, bytes.count)]))
                while let reply = try reader.next() { replies.append(reply) }
            }
            #expect(replies == Self.expected, "chunks of \(chunk)")
        }
    }

    @Test("bytes that are not RESP are a protocol error, never a crash")
    func garbage() {
        for garbage in ["?what\r\n", "$abc\r\n", ":12x\r\n"] {
            let reader = RedisReplyReader()
            #expect(throws: RedisError.self) {
                try reader.feed(ByteBuffer(string: garbage))
                while try reader.next() != nil {}
            }
        }
    }

    @Test("commands are written as RESP: integers as their decimal text with its exact length")
    func commandEncoding() {
        var buffer = ByteBuffer()
        buffer.writeRESPCommand(["SET", .bytes([0, 1]), 0, 9, 10, -7, 1_000_000, .int(Int.max), .int(Int.min)])
        let expected =
            "*9\r\n$3\r\nSET\r\n$2\r\n\0\u{1}\r\n$1\r\n0\r\n$1\r\n9\r\n$2\r\n10\r\n$2\r\n-7\r\n$7\r\n1000000\r\n"
            + "$19\r\n9223372036854775807\r\n$20\r\n-9223372036854775808\r\n"
        #expect(String(decoding: buffer.readableBytesView, as: UTF8.self) == expected)
    }
}
