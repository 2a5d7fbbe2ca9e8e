import Foundation
import PostgresNIO
import Testing

@testable import KeylineCore
@testable import KeylineLedger

/// Two or more stations on one PostgreSQL schema (the organization's ledger).
func stations(_ ids: [String]) async throws -> [PostgresLedger] {
    let schema = "o_" + String(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20))
    var out: [PostgresLedger] = []
    for id in ids {
        out.append(
            try await PostgresLedger(
                options: try .parse(Backend.postgresURL!, password: nil), stationID: id, schema: schema))
    }
    return out
}

/// Issues `cn` at `ledger` with content naming that station.
func issueAt(_ ledger: PostgresLedger, _ cn: String, key: String? = nil) async throws -> LedgerRecord {
    try await ledger.issue(reservation(cn, key: key.map { $0 } ?? "key:\(ledger.stationID):\(cn)")) {
        var c = content($0)
        c.stationID = ledger.stationID
        c.serialHex = Hex.upper(Array("\(ledger.stationID):\($0.cn)".utf8))
        c.certificateFingerprint = Hex.sha256(Array("cert:\(ledger.stationID):\($0.cn)".utf8))
        return c
    }
}

@Suite("PostgreSQL ledger: many stations, one organization", .enabled(if: Backend.postgresURL != nil))
struct PostgresLedgerTests {
    @Test("each station has its own chain from 1; a CN one station issued is refused at another")
    func perStationChains() async throws {
        let s = try await stations(["line-1", "line-2"])
        let a1 = try await issueAt(s[0], "SN-1")
        let b1 = try await issueAt(s[1], "SN-2")
        let a2 = try await issueAt(s[0], "SN-3")
        #expect([a1.seq, b1.seq, a2.seq] == [1, 1, 2])
        #expect(b1.prevHash == LedgerRecord.genesisHash && a2.prevHash == a1.hash)
        do {
            _ = try await issueAt(s[1], "SN-1")
            Issue.record("a CN of another station was issued")
        } catch let e as KeylineError {
            #expect(e.rule == "unique-cn" && e.reason.contains("by station line-1"))
        }
        // The refusal is line-2's event; nothing else changed.
        #expect(try await s[1].count() == 1)
        #expect(try await s[1].events(recordSeq: nil, limit: nil).last?.content.kind == .refused)
        for ledger in s { #expect(try await ledger.verify().isIntact) }
        // Reads are the station's own.
        #expect(try await s[1].record(cn: "SN-1") == nil)
        #expect(try await s[0].records(RecordQuery()).map(\.content.cn) == ["SN-1", "SN-3"])
    }

    @Test("four stations issuing the same CNs at once: every CN exactly once in total, every chain intact")
    func concurrentStations() async throws {
        let s = try await stations(["a", "b", "c", "d"])
        let cns = (1...40).map { "SN-\($0)" }
        let won = await withTaskGroup(of: Int.self) { group in
            for ledger in s {
                group.addTask {
                    var n = 0
                    for cn in cns.shuffled() {
                        if (try? await issueAt(ledger, cn)) != nil { n += 1 }
                    }
                    return n
                }
            }
            return await group.reduce(0, +)
        }
        #expect(won == cns.count)
        var total = 0
        var seen: Set<String> = []
        for ledger in s {
            let records = try await ledger.records(RecordQuery())
            total += records.count
            for r in records { #expect(seen.insert(r.content.cn).inserted, "\(r.content.cn) twice") }
            #expect(try await ledger.verify().isIntact)
            #expect(records.map(\.seq) == Array(1...Int64(max(records.count, 1))).prefix(records.count).map { $0 })
        }
        #expect(total == cns.count && seen == Set(cns))
    }

    @Test("history cannot be deleted or rewritten, even by the ledger's own connection; only state changes")
    func appendOnly() async throws {
        let ledger = try await stations(["line-1"])[0]
        let r = try await issueAt(ledger, "SN-9")
        for statement in [
            "DELETE FROM \(ledger.schema).records", "UPDATE \(ledger.schema).records SET cn = 'X'",
            "DELETE FROM \(ledger.schema).events", "UPDATE \(ledger.schema).events SET detail = 'x'",
        ] {
            await #expect(throws: (any Error).self, "\(statement)") {
                try await ledger.client.query(PostgresQuery(unsafeSQL: statement))
            }
        }
        _ = try await ledger.transition(
            recordSeq: r.seq, to: .delivered,
            event: EventContent(
                kind: .delivered, recordSeq: r.seq, cn: "SN-9", detail: "ok", stationID: "line-1", operatorName: "op",
                at: Date()))
        #expect(try await ledger.record(seq: r.seq)?.state == .delivered)
        #expect(try await ledger.verify().isIntact)
    }

    @Test("the station role issues and changes states but cannot delete or rewrite; the QA role only reads")
    func roles() async throws {
        let owner = try await stations(["line-1"])[0]
        let schema = owner.schema
        let base = try PostgresLedger.ConnectionOptions.parse(Backend.postgresURL!, password: nil)
        let login = "l" + String(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12))
        for statement in [
            "CREATE ROLE \(login)_st LOGIN IN ROLE \(schema)_station",
            "CREATE ROLE \(login)_qa LOGIN IN ROLE \(schema)_qa",
        ] {
            try await owner.client.query(PostgresQuery(unsafeSQL: statement))
        }
        var o = base
        o.user = "\(login)_st"
        let station = try await PostgresLedger(options: o, stationID: "line-2", schema: schema, migrate: false)
        let r = try await issueAt(station, "SN-R1")
        _ = try await station.transition(
            recordSeq: r.seq, to: .failed,
            event: EventContent(
                kind: .failed, recordSeq: r.seq, cn: "SN-R1", detail: "x", stationID: "line-2", operatorName: "op",
                at: Date()))
        #expect(try await station.verify().isIntact)
        for statement in [
            "DELETE FROM \(schema).records", "UPDATE \(schema).records SET cn = 'X'", "DELETE FROM \(schema).events",
            "TRUNCATE \(schema).events", "DROP TABLE \(schema).records", "UPDATE \(schema).events SET detail = 'x'",
        ] {
            do {
                try await station.client.query(PostgresQuery(unsafeSQL: statement))
                Issue.record("the station role could run: \(statement)")
            } catch let e as PSQLError {
                #expect(e.serverInfo?[.sqlState] == "42501", "\(statement): \(String(reflecting: e))")
            }
        }
        o.user = "\(login)_qa"
        let qa = try await PostgresLedger.connect(options: o, stationID: "line-2", schema: schema)
        #expect(try await qa.records(RecordQuery()).map(\.content.cn) == ["SN-R1"])
        #expect(try await qa.verify().isIntact)
        await #expect(throws: KeylineError.self) { try await issueAt(qa, "SN-R2") }
        #expect(try await station.count() == 1)
    }

    @Test("an unreachable server is an 'unavailable' error naming the database within the reach timeout")
    func unreachable() async throws {
        await #expect(throws: KeylineError.self) {
            _ = try await PostgresLedger(
                options: .init(host: "127.0.0.1", port: 1, user: "keyline", password: nil, database: "x"),
                stationID: "s")
        }
        do {
            _ = try await PostgresLedger(
                options: .init(host: "127.0.0.1", port: 1, user: "keyline", password: nil, database: "x"),
                stationID: "s")
        } catch let e as KeylineError {
            #expect(e.code == .unavailable && e.reason.contains("127.0.0.1:1/x does not answer"), "\(e.reason)")
            #expect(e.reason.contains("issuance is refused until it is back"))
        }
    }

    @Test("ledger URLs: user, host, port and database; a password in the URL is refused")
    func urls() throws {
        let o = try PostgresLedger.ConnectionOptions.parse("postgres://line1@db.factory:6543/keyline", password: "pw")
        #expect(o.user == "line1" && o.host == "db.factory" && o.port == 6543 && o.database == "keyline")
        #expect(throws: KeylineError.self) {
            try PostgresLedger.ConnectionOptions.parse("postgres://a:pw@h/db", password: nil)
        }
        #expect(throws: KeylineError.self) {
            try PostgresLedger.ConnectionOptions.parse("postgres://h/db", password: nil)
        }
        #expect(throws: KeylineError.self) {
            try PostgresLedger.ConnectionOptions.parse("postgres://a@h/", password: nil)
        }
    }
}
