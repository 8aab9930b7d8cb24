import Foundation
import PostgresClient
import TestSupport
import Testing

@Suite("Postgres client against a real PostgreSQL")
struct PostgresClientTests {
    /// Each test gets a table of its own, so tests run in parallel without touching each other.
    func withTable<T: Sendable>(
        _ columns: String, _ body: @escaping @Sendable (PostgresClient, String) async throws -> T
    ) async throws -> T {
        let client = try await TestEnvironment.postgresClient()
        let table = "test_" + TestEnvironment.uniqueId("pg").replacingOccurrences(of: "-", with: "_")
        try await client.execute("CREATE TABLE \(table) (\(columns))")
        do {
            let value = try await body(client, table)
            try await client.execute("DROP TABLE \(table)")
            await client.shutdown()
            return value
        } catch {
            _ = try? await client.execute("DROP TABLE \(table)")
            await client.shutdown()
            throw error
        }
    }

    @Test("each supported type and NULL round-trips as a parameter and a result")
    func typesRoundTrip() async throws {
        try await withTable("t text, i bigint, b boolean, ts timestamptz, d double precision, n text") { client, table in
            let moment = Date(timeIntervalSince1970: 1_790_000_000.123456)
            let text = "naïve 'quoted' \"double\" \\ back; DROP TABLE x; --"
            try await client.execute(
                "INSERT INTO \(table) (t, i, b, ts, d, n) VALUES ($1, $2, $3, $4, $5, $6)",
                [.text(text), .int(-9_007_199_254_740_993), .bool(true), .timestamp(moment), .double(2.5), .null])
            let rows = try await client.query("SELECT t, i, b, ts, d, n FROM \(table)")
            #expect(rows.count == 1)
            let row = rows[0]
            #expect(row["t"].string == text)
            #expect(row["i"].int == -9_007_199_254_740_993)
            #expect(row["b"].bool == true)
            #expect(abs(row["ts"].date!.timeIntervalSince1970 - moment.timeIntervalSince1970) < 0.000_001)
            #expect(row["d"].double == 2.5)
            #expect(row["n"].isNull)
            #expect(row["n"].string == nil)
            let echoed = try await client.query("SELECT $1::bigint AS a, $2::text AS b, $3::boolean AS c", [.int(7), .null, .bool(false)])
            #expect(echoed[0]["a"].int == 7)
            #expect(echoed[0]["b"].isNull)
            #expect(echoed[0]["c"].bool == false)
        }
    }

    @Test("array parameters feed multi-row statements")
    func arrays() async throws {
        try await withTable("id text primary key, n bigint") { client, table in
            let ids: [String?] = ["a", "b,\"c\"", "d\\e", "{f}"]
            let changed = try await client.execute(
                "INSERT INTO \(table) (id, n) SELECT * FROM unnest($1::text[], $2::bigint[])",
                [.textArray(ids), .intArray([1, 2, 3, nil])])
            #expect(changed == 4)
            let rows = try await client.query("SELECT id, n FROM \(table) ORDER BY n NULLS LAST")
            #expect(rows.map { $0["id"].string } == ids)
            #expect(rows[3]["n"].isNull)
        }
    }

    @Test("a unique violation is recognized by its SQLSTATE")
    func uniqueViolation() async throws {
        try await withTable("id text primary key") { client, table in
            try await client.execute("INSERT INTO \(table) VALUES ($1)", [.text("x")])
            do {
                try await client.execute("INSERT INTO \(table) VALUES ($1)", [.text("x")])
                Issue.record("expected a unique violation")
            } catch let error as PostgresError {
                #expect(error.isUniqueViolation)
                #expect(error.sqlState == "23505")
                #expect(!error.isSerializationFailure)
            }
            // A syntax error is something else entirely.
            do {
                try await client.execute("SELEC 1")
                Issue.record("expected a syntax error")
            } catch let error as PostgresError {
                #expect(error.sqlState == "42601")
                #expect(!error.isUniqueViolation)
            }
        }
    }

    @Test("a serialization failure is recognized by its SQLSTATE")
    func serializationFailure() async throws {
        try await withTable("id int primary key, n int") { client, table in
            try await client.execute("INSERT INTO \(table) VALUES (1, 0)")
            let first = try PostgresConnection(url: try TestEnvironment.databaseURL())
            let second = try PostgresConnection(url: try TestEnvironment.databaseURL())
            try first.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            try second.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            _ = try first.query("SELECT n FROM \(table) WHERE id = 1")
            _ = try second.query("SELECT n FROM \(table) WHERE id = 1")
            try first.execute("UPDATE \(table) SET n = n + 1 WHERE id = 1")
            try first.execute("COMMIT")
            do {
                try second.execute("UPDATE \(table) SET n = n + 1 WHERE id = 1")
                Issue.record("expected a serialization failure")
            } catch let error as PostgresError {
                #expect(error.isSerializationFailure)
            }
            try second.execute("ROLLBACK")
        }
    }

    @Test("a rolled-back transaction leaves nothing")
    func rollback() async throws {
        try await withTable("id text primary key") { client, table in
            struct Abort: Error {}
            await #expect(throws: Abort.self) {
                try await client.transaction { connection in
                    try connection.execute("INSERT INTO \(table) VALUES ($1)", [.text("ghost")])
                    #expect(try connection.query("SELECT count(*) AS n FROM \(table)")[0]["n"].int == 1)
                    throw Abort()
                }
            }
            #expect(try await client.query("SELECT count(*) AS n FROM \(table)")[0]["n"].int == 0)
            try await client.transaction { connection in
                try connection.execute("INSERT INTO \(table) VALUES ($1)", [.text("kept")])
            }
            #expect(try await client.query("SELECT count(*) AS n FROM \(table)")[0]["n"].int == 1)
        }
    }

    @Test("50 concurrent tasks share the client correctly")
    func concurrentTasks() async throws {
        try await withTable("task int, n int, primary key (task, n)") { client, table in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<50 {
                    group.addTask {
                        for n in 0..<20 {
                            try await client.execute("INSERT INTO \(table) VALUES ($1, $2)", [.int(task), .int(n)])
                            let rows = try await client.query("SELECT count(*) AS c FROM \(table) WHERE task = $1", [.int(task)])
                            guard rows[0]["c"].int == n + 1 else { throw PostgresError(kind: .query, message: "task \(task) lost a row") }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await client.query("SELECT count(*) AS n FROM \(table)")[0]["n"].int == 1000)
        }
    }

    @Test("a batch of 100,000 rows is written with COPY and counted")
    func bulkCopy() async throws {
        try await withTable("id bigint primary key, label text, note text") { client, table in
            let rows: [[PostgresValue]] = (0..<100_000).map { index in
                [.int(index), .text("row\t\(index)\nwith \\ escapes"), index % 10 == 0 ? .null : .text("n")]
            }
            let copied = try await client.withConnection { connection in
                try connection.copy(into: table, columns: ["id", "label", "note"], rows: rows)
            }
            #expect(copied == 100_000)
            let summary = try await client.query("SELECT count(*) AS n, count(note) AS notes FROM \(table)")
            #expect(summary[0]["n"].int == 100_000)
            #expect(summary[0]["notes"].int == 90_000)
            let sample = try await client.query("SELECT label FROM \(table) WHERE id = $1", [.int(4242)])
            #expect(sample[0]["label"].string == "row\t4242\nwith \\ escapes")
        }
    }

    @Test("a bad DATABASE_URL fails with a connection error, not a hang")
    func badURL() async throws {
        let client = PostgresClient(url: "postgres://postgres@127.0.0.1:\(try freePort())/nothing?connect_timeout=2")
        let started = ContinuousClock.now
        do {
            try await client.execute("SELECT 1")
            Issue.record("expected a connection error")
        } catch let error as PostgresError {
            #expect(error.kind == .connection)
            #expect(error.isConnectionProblem)
        }
        // (a CI run with two CPU hogs took 32.7 s in the suites' busiest minute: the bound is for a hang)
        #expect(ContinuousClock.now - started < .seconds(300), "bounded, not a hang")
        await client.shutdown()
    }

    @Test("timestamps parse in every offset Postgres prints")
    func timestampParsing() throws {
        let utc = PostgresCell(raw: "2026-11-24 16:20:54.5+00").date
        let shifted = PostgresCell(raw: "2026-11-24 18:20:54.5+02").date
        let plain = PostgresCell(raw: "2026-11-24 16:20:54+00:00").date
        #expect(utc != nil)
        #expect(utc == shifted)
        #expect(utc!.timeIntervalSince1970 - plain!.timeIntervalSince1970 == 0.5)
    }
}
