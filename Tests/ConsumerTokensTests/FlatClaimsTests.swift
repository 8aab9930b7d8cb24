import TestSupport
import Testing

@testable import ConsumerTokens

/// The one-pass claims reader (`FlatClaims`) against the full one: it must answer the payloads
/// issuers sign, and on everything it answers say exactly what the full reader says.
@Suite struct FlatClaimsTests {
    static let answered = [
        #"{"sub":"alice","exp":1800000000}"#,
        #"{"sub":"consumer-7f3a9c2e@shop.example","exp":1800003600,"iat":1800000000,"aud":"shop"}"#,
        #"{"sub":"a","exp":1800000000,"nbf":1799999000,"iat":1799999000,"aud":["other","shop"],"scope":"reserve read","admin":false,"n":null,"roles":["a","b",1,true]}"#,
        " {\n\t\"sub\" : \"bob\" ,\r\n \"exp\" : 1.8e9 } ",
        #"{"sub":"bob","exp":1800000000.999,"iat":0,"nbf":0.5}"#,
        #"{"exp":1800000000}"#,  // no sub: invalidSubject
        #"{"sub":"bob"}"#,  // no exp: invalidTime
        #"{"sub":"bad id","exp":1800000000}"#,  // a space: invalidSubject
        #"{"sub":"","exp":1800000000}"#,
        #"{"sub":1,"exp":1800000000}"#,
        #"{"sub":["bob"],"exp":1800000000}"#,
        #"{"sub":"bob","exp":"1800000000"}"#,
        #"{"sub":"bob","exp":-1}"#,
        #"{"sub":"bob","exp":1e300}"#,
        #"{"sub":"bob","exp":253402300800}"#,
        #"{"sub":"bob","exp":253402300799}"#,
        #"{"sub":"bob","exp":1800000000,"nbf":"x"}"#,
        #"{"sub":"bob","exp":1800000000,"iat":true}"#,
        #"{"sub":"bob","exp":1800000000,"aud":"shop2"}"#,
        #"{"sub":"bob","exp":1800000000,"aud":["a",1,"shop"]}"#,
        #"{"sub":"bob","exp":1800000000,"aud":[]}"#,
        #"{"sub":"bob","exp":1800000000,"aud":3}"#,
        #"{}"#,
    ]

    /// Passed on to the full reader: escapes, non-ASCII, nesting, duplicates, malformed JSON.
    static let passedOn = [
        #"{"s\u0075b":"bob","exp":1800000000}"#,
        #"{"sub":"b\u006fb","exp":1800000000}"#,
        "{\"sub\":\"bób\",\"exp\":1800000000}",
        #"{"sub":"bob","exp":1800000000,"realm":{"roles":["x"]}}"#,
        #"{"sub":"bob","exp":1800000000,"a":[["x"]]}"#,
        #"{"sub":"bob","sub":"mallory","exp":1800000000}"#,
        #"{"sub":"bob","exp":1800000000,"exp":1}"#,
        #"{"sub":"bob","exp":1800000000,}"#,
        #"{"sub":"bob","exp":00}"#,
        #"{"sub":"bob","exp":1800000000} x"#,
        #"["sub","bob"]"#,
        #"{"sub":"bob","exp":1800000000"#,
        "",
        "{\"sub\":\"bo\u{1}b\",\"exp\":1800000000}",
    ]

    @Test func answersTheUsualShapesAsTheFullReaderDoes() {
        for payload in Self.answered {
            for audience in [nil, "shop"] {
                #expect(ClaimsReaders.answersFast(Array(payload.utf8), audience: audience), "\(payload)")
                #expect(ClaimsReaders.agree(Array(payload.utf8), audience: audience), "\(payload)")
            }
        }
        // The readers' figures themselves, for one payload of each kind of answer.
        let full = Array(#"{"sub":"a","exp":1800000000.9,"nbf":17e8,"iat":0,"aud":["x","shop"]}"#.utf8)
        #expect(
            FlatClaims.read(full, audience: Array("shop".utf8))
                == .success(Claims(subject: "a", expiresAt: 1_800_000_000, notBefore: 1_700_000_000, issuedAt: 0)))
        #expect(FlatClaims.read(full, audience: Array("shops".utf8)) == .failure(.init(.audienceMismatch)))
    }

    @Test func passesOnWhatIsNotItsShape() {
        for payload in Self.passedOn {
            #expect(!ClaimsReaders.answersFast(Array(payload.utf8), audience: "shop"), "\(payload)")
        }
        // Sixteen members are answered, seventeen passed on.
        let members = (0..<14).map { #""c\#($0)":\#($0)"# }.joined(separator: ",")
        #expect(ClaimsReaders.answersFast(Array(#"{"sub":"a","exp":1800000000,\#(members)}"#.utf8), audience: nil))
        #expect(!ClaimsReaders.answersFast(Array(#"{"sub":"a","exp":1800000000,\#(members),"c99":1}"#.utf8), audience: nil))
        // Deep arrays are refused at the second level, without recursing.
        #expect(!ClaimsReaders.answersFast(Array(("{\"a\":" + String(repeating: "[", count: 3000)).utf8), audience: nil))
    }

    /// Random payloads from pieces that hit every branch of both readers (a fixed seed: the same
    /// inputs every run): wherever the fast reader answers, it agrees with the full one.
    @Test func agreesOnRandomPayloads() {
        var generator = SeededGenerator(state: 0x5EED_C1A1_3500_0001)
        let names = [#""sub""#, #""exp""#, #""nbf""#, #""iat""#, #""aud""#, #""x""#, #""s\u0075b""#, #""""#]
        let values = [
            #""alice""#, #""shop""#, #""a b""#, #""""#, "1800000000", "1.8e9", "0", "-1", "00", "1e", "1800000000.5", "true", "null",
            #"["shop"]"#, #"["a",1]"#, "[]", #"{"k":1}"#, #""\u00e9""#, "253402300799", "1E+3", "0.0000001e16", #"[["x"]]"#,
        ]
        let separators = [",", ", ", "", " , "]
        var answered = 0
        for _ in 0..<20_000 {
            var payload = "{"
            let count = Int(generator.next() % 7)
            for index in 0..<count {
                if index > 0 { payload += separators[Int(generator.next() % UInt64(separators.count))] }
                payload += names[Int(generator.next() % UInt64(names.count))] + ":" + values[Int(generator.next() % UInt64(values.count))]
            }
            payload += generator.next() % 16 == 0 ? "" : "}"
            var bytes = Array(payload.utf8)
            // Now and then one byte changed, anywhere.
            if generator.next() % 4 == 0, !bytes.isEmpty {
                bytes[Int(generator.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: generator.next())
            }
            let audience = generator.next() % 2 == 0 ? nil : "shop"
            if ClaimsReaders.answersFast(bytes, audience: audience) { answered += 1 }
            #expect(ClaimsReaders.agree(bytes, audience: audience), "\(String(decoding: bytes, as: UTF8.self))")
        }
        // The fast reader is exercised, not bypassed.
        #expect(answered > 4_000)
    }

    @Test func numericDatesInPlace() {
        for (text, seconds) in [
            ("0", Int64(0)), ("1800000000", 1_800_000_000), ("1.8e9", 1_800_000_000), ("18e8", 1_800_000_000), ("0.5", 0),
            ("1800000000.999", 1_800_000_000),
            ("180000000000e-2", 1_800_000_000), ("0.00018e13", 1_800_000_000), ("253402300799", 253_402_300_799), ("1e-400000", 0),
        ] {
            #expect(NumericDate.seconds(Array(text.utf8)) == seconds, "\(text)")
        }
        for text in ["253402300800", "1e12", "-1", "1e400000", "x", "1e1x"] { #expect(NumericDate.seconds(Array(text.utf8)) == nil, "\(text)") }
    }
}
