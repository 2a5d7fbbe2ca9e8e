import Foundation
import GRDB
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

    // MARK: - Retries

    /// Counts attempts from a fault-injection hook.
    final class Attempts: @unchecked Sendable {
        private let lock = NSLock()
        private var n = 0
        func next() -> Int {
            lock.lock()
            defer { lock.unlock() }
            n += 1
            return n - 1
        }
        var count: Int {
            lock.lock()
            defer { lock.unlock() }
            return n
        }
    }

    @Test("a serialization failure before COMMIT is retried: one record, the chain intact")
    func retriesSerializationFailure() async throws {
        let ledger = try await stations(["line-1"])[0]
        let attempts = Attempts()
        let log = ledger.logger
        ledger.beforeCommit = { conn, attempt in
            _ = attempts.next()
            if attempt == 0 {
                try await conn.exec(
                    "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure'; END $$",
                    logger: log)
            }
        }
        let signed = Attempts()
        let r = try await ledger.issue(reservation("SN-RETRY")) {
            _ = signed.next()
            return content($0)
        }
        #expect(attempts.count == 2 && signed.count == 2, "signed again on the second attempt")
        #expect(r.seq == 1)
        ledger.beforeCommit = nil
        #expect(try await ledger.count() == 1)
        #expect(try await ledger.records(RecordQuery()).map(\.content.serialHex) == [r.content.serialHex])
        #expect(try await ledger.verify().isIntact)
    }

    @Test("a session the server ends before COMMIT (SQLSTATE 57P01) is retried")
    func retriesDroppedConnection() async throws {
        let ledger = try await stations(["line-1"])[0]
        let attempts = Attempts()
        let log = ledger.logger
        ledger.beforeCommit = { conn, attempt in
            _ = attempts.next()
            // What the server says when it ends a session (failover, pg_terminate_backend): SQLSTATE 57P01. It is
            // injected rather than done: a real termination mid-transaction made postgres-nio's pool hang now and
            // then (see the note in transaction()).
            if attempt == 0 {
                try await conn.exec(
                    "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'admin_shutdown'; END $$", logger: log)
            }
        }
        let r = try await issueAt(ledger, "SN-DROP")
        #expect(attempts.count == 2)
        ledger.beforeCommit = nil
        #expect(try await ledger.records(RecordQuery()).map(\.seq) == [r.seq])
        #expect(try await ledger.heads().eventsSeq == 1, "one issued event, no half of a first attempt")
        #expect(try await ledger.verify().isIntact)
    }

    @Test("retries end: a failure that persists reaches the caller as 'temporary failure', nothing written")
    func retriesGiveUp() async throws {
        let ledger = try await stations(["line-1"])[0]
        ledger.retryDelays = [.milliseconds(1), .milliseconds(1)]
        let attempts = Attempts()
        let log = ledger.logger
        ledger.beforeCommit = { conn, _ in
            _ = attempts.next()
            try await conn.exec(
                "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'deadlock_detected'; END $$",
                logger: log)
        }
        do {
            _ = try await issueAt(ledger, "SN-X")
            Issue.record("issued although every attempt failed")
        } catch let e as KeylineError {
            #expect(e.code == .temporaryFailure && e.exitStatus == 75, "\(e.reason)")
        }
        #expect(attempts.count == 3)
        ledger.beforeCommit = nil
        #expect(try await ledger.count() == 0)
        #expect(
            try await ledger.heads()
                == LedgerHeads(
                    recordsSeq: 0, recordsHash: LedgerRecord.genesisHash, eventsSeq: 0,
                    eventsHash: LedgerRecord.genesisHash))
    }

    @Test(
        "a group that keeps deadlocking goes one transaction per request: each judged on its own, nothing of the failed attempts written"
    )
    func groupDeadlockFallsBackToOneTransactionEach() async throws {
        let ledger = try await stations(["line-1"])[0]
        ledger.retryDelays = [.milliseconds(1), .milliseconds(1)]
        _ = try await issueAt(ledger, "SN-TAKEN")
        let before = try await ledger.heads()
        let attempts = Attempts()
        let log = ledger.logger
        ledger.beforeCommit = { conn, _ in
            // The group's transaction and its two retries deadlock; the transactions after them do not.
            if attempts.next() < 3 {
                try await conn.exec(
                    "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'deadlock_detected'; END $$",
                    logger: log)
            }
        }
        var signed: [[String]] = []
        let results = try await ledger.issueEach([
            reservation("SN-A"), reservation("SN-TAKEN", key: "fresh"), reservation("SN-B"),
        ]) { r in
            signed.append(r.map(\.cn))
            return r.map { content($0) }
        }
        ledger.beforeCommit = nil
        #expect(results.map { (try? $0.get())?.content.cn } == ["SN-A", nil, "SN-B"])
        if case .failure(let e) = results[1] {
            #expect(e.rule == "unique-cn")
        } else {
            Issue.record("SN-TAKEN was issued twice")
        }
        // Signed by each of the group's three attempts, then once for each request on its own.
        #expect(signed == [["SN-A", "SN-B"], ["SN-A", "SN-B"], ["SN-A", "SN-B"], ["SN-A"], ["SN-B"]])
        let events = try await ledger.events(recordSeq: nil, limit: nil).filter { $0.seq > before.eventsSeq }
        #expect(events.map(\.content.kind) == [.issued, .refused, .issued])
        #expect(try await ledger.records(RecordQuery()).map(\.content.cn) == ["SN-TAKEN", "SN-A", "SN-B"])
        #expect(try await ledger.verify().isIntact)
    }

    @Test("a transaction the server aborted is never reported committed (COMMIT answered ROLLBACK)")
    func abortedTransactionIsNotCommitted() async throws {
        let ledger = try await stations(["line-1"])[0]
        ledger.retryDelays = [.milliseconds(1)]
        let attempts = Attempts()
        let log = ledger.logger
        ledger.beforeCommit = { conn, _ in
            _ = attempts.next()
            // An error nobody looks at: the server aborts the transaction and will answer COMMIT with ROLLBACK.
            _ = try? await conn.exec("SELECT 1/0", logger: log)
        }
        do {
            let r = try await issueAt(ledger, "SN-GHOST")
            Issue.record("reported seq \(r.seq) as committed")
        } catch let e as KeylineError {
            #expect(e.code == .temporaryFailure && e.reason.contains("answered ROLLBACK to COMMIT"), "\(e.reason)")
        }
        #expect(attempts.count == 2, "a rolled-back attempt is retried")
        ledger.beforeCommit = nil
        #expect(try await ledger.count() == 0)
    }

    @Test("a session ended after COMMIT was sent is not retried, and the error says the outcome is unknown")
    func lostAfterCommitSent() async throws {
        let ledger = try await stations(["line-1"])[0]
        let attempts = Attempts()
        let log = ledger.logger
        ledger.afterCommitSent = { conn, _ in
            _ = attempts.next()
            try await conn.exec(
                "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'admin_shutdown'; END $$", logger: log)
        }
        do {
            let r = try await issueAt(ledger, "SN-UNKNOWN")
            Issue.record("reported seq \(r.seq) as committed")
        } catch let e as KeylineError {
            #expect(e.code == .unavailable && e.reason.contains("whether it was recorded is unknown"), "\(e.reason)")
        }
        #expect(attempts.count == 1, "not run again: the first attempt might have committed")
        ledger.afterCommitSent = nil
        #expect(try await ledger.count() == 0)
    }

    @Test("a read that hands rows to its caller is not run again after a failure; a plain read is")
    func readRetries() async throws {
        let ledger = try await stations(["line-1"])[0]
        for i in 1...5 { _ = try await issueAt(ledger, "SN-\(i)") }
        let attempts = Attempts()
        let log = ledger.logger
        ledger.beforeCommit = { conn, attempt in
            _ = attempts.next()
            if attempt == 0 {
                try await conn.exec(
                    "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'admin_shutdown'; END $$", logger: log)
            }
        }
        let delivered = Attempts()
        await #expect(throws: KeylineError.self) {
            try await ledger.forEachRecord(RecordQuery()) { _ in _ = delivered.next() }
        }
        #expect(delivered.count == 5, "each record handed over once, not again by a retry")
        #expect(attempts.count == 1)
        #expect(try await ledger.count() == 5, "a plain read is retried on a new connection")
        #expect(attempts.count == 3)
        ledger.beforeCommit = nil
    }

    @Test("verify catches a chain whose newest record and event were cut off behind the triggers' back")
    func cutOffChain() async throws {
        let ledger = try await stations(["line-1"])[0]
        for i in 1...3 { _ = try await issueAt(ledger, "SN-\(i)") }
        #expect(try await ledger.verify().isIntact)
        let s = ledger.schema
        for statement in [
            "ALTER TABLE \(s).records DISABLE TRIGGER records_no_rewrite",
            "ALTER TABLE \(s).events DISABLE TRIGGER events_no_rewrite",
            "DELETE FROM \(s).events WHERE seq = 3", "DELETE FROM \(s).records WHERE seq = 3",
        ] {
            try await ledger.client.query(PostgresQuery(unsafeSQL: statement))
        }
        let report = try await ledger.verify()
        #expect(!report.isIntact)
        #expect(report.problems.contains { $0.contains("head says seq 3") && $0.contains("ends at seq 2") })
    }

    @Test("a caller's own error and a constraint are not retried")
    func noRetryForCallerErrors() async throws {
        let ledger = try await stations(["line-1"])[0]
        let signed = Attempts()
        await #expect(throws: KeylineError.self) {
            _ = try await ledger.issue(reservation("SN-E")) { _ in
                _ = signed.next()
                throw KeylineError(.dataError, "the CSR is bad")
            }
        }
        #expect(signed.count == 1)
        // A connection lost after COMMIT was sent leaves the outcome unknown: a write is not run again.
        #expect(!PostgresLedger.retryable(sqlState: nil, commitSent: true, readOnly: false))
        #expect(!PostgresLedger.retryable(sqlState: "57P01", commitSent: true, readOnly: false))
        #expect(PostgresLedger.retryable(sqlState: nil, commitSent: false, readOnly: false))
        #expect(PostgresLedger.retryable(sqlState: nil, commitSent: true, readOnly: true))
        #expect(PostgresLedger.retryable(sqlState: "40001", commitSent: true, readOnly: false))
        #expect(!PostgresLedger.retryable(sqlState: "23505", commitSent: false, readOnly: false))
    }

    // MARK: - All stations, QA

    @Test("verify(chain:) walks any station's chain; a read-only connection needs the station to exist")
    func allStations() async throws {
        let s = try await stations(["line-1", "line-2"])
        _ = try await issueAt(s[0], "SN-A")
        _ = try await issueAt(s[1], "SN-B")
        _ = try await issueAt(s[1], "SN-C")
        #expect(try await s[0].stationIDs() == ["line-1", "line-2"])
        #expect(try await s[0].verify(chain: "line-2").recordsChecked == 2)
        #expect(try await s[0].verify(chain: "line-2").isIntact)
        let o = try PostgresLedger.ConnectionOptions.parse(Backend.postgresURL!, password: nil)
        do {
            _ = try await PostgresLedger.connect(options: o, stationID: "line-9", schema: s[0].schema)
            Issue.record("a read-only connection to an unknown station opened")
        } catch let e as KeylineError {
            #expect(e.code == .configuration && e.reason.contains("stations there: line-1, line-2"), "\(e.reason)")
        }
        #expect(try await s[0].stationIDs() == ["line-1", "line-2"], "the read-only open registered nothing")
    }

    // MARK: - Copy from SQLite

    func sqliteLedger(_ cns: [String]) async throws -> (SQLiteLedger, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kl-copy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("ledger.sqlite").path
        let ledger = try SQLiteLedger(path: path, stationID: "station-test", create: true)
        for cn in cns { try await issue(ledger, cn) }
        return (ledger, path)
    }

    @Test("ledger copy: every record and event with its hash, states kept, the chain continues in PostgreSQL")
    func copyFromSQLite() async throws {
        let (source, _) = try await sqliteLedger((1...1203).map { "SN-\($0)" })
        // States other than issued, a revocation and a re-issue, and events without a record.
        let first = try await source.record(cn: "SN-1")!
        try await source.transition(
            recordSeq: first.seq, to: .delivered,
            event: EventContent(
                kind: .delivered, recordSeq: first.seq, cn: "SN-1", detail: "read back", stationID: "station-test",
                operatorName: "op", at: t0))
        try await source.transition(
            recordSeq: first.seq, to: .revoked,
            event: EventContent(
                kind: .revoked, recordSeq: first.seq, cn: "SN-1", detail: "rework", stationID: "station-test",
                operatorName: "op", at: t0))
        var again = reservation("SN-1", key: "new-key")
        again.reissue = true
        _ = try await source.issue(again) { r in
            var c = content(r, serial: "AB01")
            c.certificateFingerprint = Hex.sha256(Array("cert2".utf8))
            c.reissueOf = r.reissueOf
            return c
        }
        _ = try await source.recordRefusal(cn: "SN-X", reason: "unique-cn", operatorName: "op", at: t0)

        let dest = try await stations(["station-test"])[0]
        let report = try await dest.copyChain(from: source, pageSize: 500)
        let sourceEvents = try await source.heads().eventsSeq
        #expect(sourceEvents >= 1207)
        #expect(report.records == 1204 && report.events == Int(sourceEvents), "\(report.records) \(report.events)")
        #expect(report.matches && report.verification.isIntact)
        #expect(report.destinationHeads == (try await source.heads()))
        #expect(try await dest.records(RecordQuery()) == (try await source.records(RecordQuery())))
        #expect(
            try await dest.events(recordSeq: nil, limit: nil) == (try await source.events(recordSeq: nil, limit: nil)))
        #expect(try await dest.history(cn: "SN-1").map(\.state) == [.revoked, .issued])
        // The station carries on where its SQLite ledger stopped.
        let next = try await issueAt(dest, "SN-NEXT")
        #expect(next.seq == 1205 && next.prevHash == report.sourceHeads.recordsHash)
        #expect(try await dest.verify().isIntact)

        // Into a chain that holds anything: refused, nothing changed.
        do {
            _ = try await dest.copyChain(from: source)
            Issue.record("copied into a chain that is not empty")
        } catch let e as KeylineError {
            #expect(e.code == .dataError && e.reason.contains("copied only into an empty chain"), "\(e.reason)")
        }
        #expect(try await dest.count() == 1205)
    }

    @Test("ledger copy refuses a CN another station holds, and a source that does not verify, writing nothing")
    func copyRefusals() async throws {
        let (source, path) = try await sqliteLedger(["SN-1", "SN-2", "SN-3"])
        let other = try await stations(["other"])[0]
        _ = try await issueAt(other, "SN-3")
        let dest = try await PostgresLedger(
            options: try .parse(Backend.postgresURL!, password: nil), stationID: "station-test", schema: other.schema,
            migrate: false, registration: .none)
        do {
            _ = try await dest.copyChain(from: source, pageSize: 2)
            Issue.record("copied a CN another station holds")
        } catch let e as KeylineError {
            #expect(e.code == .dataError && e.reason.contains("(cn)=(SN-3)"), "\(e.reason)")
        }
        #expect(try await other.stationIDs() == ["other"], "a refused copy leaves no trace, not even the station")

        // A source that changes during the copy (a station still running): refused, nothing written.
        let (busy, busyPath) = try await sqliteLedger((1...6).map { "SN-B\($0)" })
        let writer = try DatabaseQueue(path: busyPath)
        let moved = Attempts()
        do {
            _ = try await dest.copyChain(from: busy, pageSize: 2) { _, _ in
                guard moved.next() == 0 else { return }
                try? writer.write { db in
                    try db.execute(
                        sql: """
                            INSERT INTO events (seq, kind, detail, station_id, operator, at, prev_hash, hash)
                            VALUES (7, 'refused', 'meanwhile', 'station-test', 'op', 0, 'x', 'y')
                            """)
                }
            }
            Issue.record("copied a source that changed meanwhile")
        } catch let e as KeylineError {
            #expect(e.code == .temporaryFailure && e.reason.contains("changed during the copy"), "\(e.reason)")
        }
        #expect(moved.count > 0)
        #expect(try await other.stationIDs() == ["other"])

        // An edited source.
        let db = try DatabaseQueue(path: path)
        try await db.writeWithoutTransaction { db in
            for t in ["records_no_delete", "records_no_rewrite", "events_no_delete", "events_no_update"] {
                try db.execute(sql: "DROP TRIGGER IF EXISTS \(t)")
            }
            try db.execute(sql: "UPDATE records SET cn = 'SN-9' WHERE seq = 2")
        }
        let fresh = dest
        do {
            _ = try await fresh.copyChain(from: try SQLiteLedger(path: path, stationID: "station-test"))
            Issue.record("copied a tampered ledger")
        } catch let e as KeylineError {
            #expect(e.code == .integrity && e.reason.contains("record seq 2"), "\(e.reason)")
        }
        #expect(try await other.stationIDs() == ["other"])
    }
}
