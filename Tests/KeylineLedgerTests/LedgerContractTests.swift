import Foundation
import GRDB
import Testing

@testable import KeylineCore
@testable import KeylineLedger

/// The ledger backends every contract test runs against: in memory, SQLite, and PostgreSQL when
/// `KEYLINE_TEST_POSTGRES` names a server (Scripts/test starts a private one, so CI always runs all three).
enum Backend: String, CaseIterable, CustomTestStringConvertible {
    case memory
    case sqlite
    case postgres

    static var allCases: [Backend] {
        postgresURL == nil ? [.memory, .sqlite] : [.memory, .sqlite, .postgres]
    }

    static var postgresURL: String? {
        ProcessInfo.processInfo.environment["KEYLINE_TEST_POSTGRES"].flatMap { $0.isEmpty ? nil : $0 }
    }

    var testDescription: String { rawValue }

    func make() async throws -> any Ledger {
        switch self {
        case .postgres:
            // A schema of its own per test: the uniqueness indexes are organization-wide.
            return try await PostgresLedger(
                options: try .parse(Self.postgresURL!, password: nil), stationID: "station-test",
                schema: "t_" + String(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20))
            )
        case .memory: return InMemoryLedger(stationID: "station-test")
        case .sqlite:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
                "keyline-ledger-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            return try SQLiteLedger(
                path: dir.appendingPathComponent("ledger.sqlite").path, stationID: "station-test", create: true)
        }
    }
}

let t0 = Date(timeIntervalSince1970: 1_800_000_000.123)

func content(_ r: Reservation, serial: String? = nil, at: Date = t0) -> RecordContent {
    RecordContent(
        cn: r.cn, serialHex: serial ?? Hex.upper(Array(r.cn.utf8)),
        certificateFingerprint: Hex.sha256(Array(("cert:" + r.cn).utf8)),
        publicKeySHA256: r.publicKeySHA256, caFingerprint: String(repeating: "C", count: 64), caName: "dev",
        profile: "default",
        stationID: "station-test", operatorName: "op", keyOrigin: .device, hardwareID: "hw-\(r.cn)", notBefore: at,
        notAfter: at.addingTimeInterval(86400 * 365), certificateDER: Array(("der:" + r.cn).utf8), createdAt: at)
}

func reservation(_ cn: String, key: String? = nil) -> Reservation {
    Reservation(cn: cn, publicKeySHA256: Hex.sha256(Array((key ?? "key:" + cn).utf8)), operatorName: "op")
}

@discardableResult
func issue(_ ledger: any Ledger, _ cn: String, key: String? = nil) async throws -> LedgerRecord {
    try await ledger.issue(reservation(cn, key: key)) { content($0) }
}

@Suite("Ledger contract")
struct LedgerContractTests {
    @Test("records are numbered from 1 and chained from the genesis hash", arguments: Backend.allCases)
    func chain(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        let a = try await issue(ledger, "dev-1")
        let b = try await issue(ledger, "dev-2")
        #expect(a.seq == 1 && b.seq == 2)
        #expect(a.prevHash == LedgerRecord.genesisHash)
        #expect(b.prevHash == a.hash)
        #expect(b.hash == ChainHash.record(seq: 2, prevHash: a.hash, content: b.content))
        let stored = try #require(try await ledger.record(cn: "dev-2"))
        #expect(stored == b)
        #expect(try await ledger.count() == 2)
        let report = try await ledger.verify()
        #expect(report.isIntact)
        #expect(report.recordsChecked == 2 && report.headSeq == 2 && report.headHash == b.hash)
    }

    @Test("a duplicate CN is refused before signing and leaves only a refusal event", arguments: Backend.allCases)
    func duplicateCN(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        try await issue(ledger, "dev-1")
        var signed = false
        await #expect(throws: KeylineError(.policyRefusal, "")) {
            try await ledger.issue(reservation("dev-1", key: "other")) { r in
                signed = true
                return content(r)
            }
        }
        #expect(!signed, "sign must not run when the reservation is refused")
        #expect(try await ledger.count() == 1)
        let events = try await ledger.events(recordSeq: nil, limit: nil)
        #expect(events.last?.content.kind == .refused)
        #expect(events.last?.content.cn == "dev-1")
        #expect(events.last?.content.detail.hasPrefix("unique-cn") == true)
        #expect(try await ledger.verify().isIntact)
    }

    @Test("a reused public key is refused under another CN", arguments: Backend.allCases)
    func duplicateKey(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        try await issue(ledger, "dev-1", key: "shared")
        do {
            try await issue(ledger, "dev-2", key: "shared")
            Issue.record("reused key accepted")
        } catch let e as KeylineError {
            #expect(e.rule == "unique-public-key")
        }
        #expect(try await ledger.record(cn: "dev-2") == nil)
    }

    @Test("a failure while signing commits nothing", arguments: Backend.allCases)
    func signFailure(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await ledger.issue(reservation("dev-1")) { _ in throw Boom() }
        }
        #expect(try await ledger.count() == 0)
        #expect(try await ledger.record(cn: "dev-1") == nil)
        try await issue(ledger, "dev-1")
        #expect(try await ledger.verify().isIntact)
    }

    @Test("a batch commits all or nothing", arguments: Backend.allCases)
    func batch(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        try await issue(ledger, "dev-3")
        let names = ["dev-1", "dev-2", "dev-3", "dev-4"]
        await #expect(throws: KeylineError(.policyRefusal, "")) {
            try await ledger.issueBatch(names.map { reservation($0, key: "batch:" + $0) }) { $0.map { content($0) } }
        }
        #expect(try await ledger.count() == 1, "the refused batch must leave no record")
        let ok = try await ledger.issueBatch(["dev-1", "dev-2"].map { reservation($0) }) { $0.map { content($0) } }
        #expect(ok.map(\.seq) == [2, 3])
        #expect(try await ledger.verify().isIntact)
    }

    @Test(
        "a batch is checked whole before anything is signed: a CN or key twice in it is refused",
        arguments: Backend.allCases)
    func batchDuplicates(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        var signedCalls = 0
        for batch in [
            [reservation("x-1"), reservation("x-1", key: "other")],
            [reservation("x-2", key: "k"), reservation("x-3", key: "k")],
        ] {
            do {
                _ = try await ledger.issueBatch(batch) { r in
                    signedCalls += 1
                    return r.map { content($0) }
                }
                Issue.record("a batch with a duplicate was accepted")
            } catch let e as KeylineError {
                #expect(e.code == .policyRefusal)
            }
        }
        #expect(signedCalls == 0, "nothing may be signed for a refused batch")
        #expect(try await ledger.count() == 0)
    }

    @Test(
        "a group commit judges each request on its own: refused ones leave their event, the rest commit together",
        arguments: Backend.allCases)
    func issueEach(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        try await issue(ledger, "dev-2")
        let before = try await ledger.heads().eventsSeq
        var signedGroups: [[String]] = []
        let results = try await ledger.issueEach([
            reservation("dev-1"),
            reservation("dev-2", key: "fresh"),  // CN already issued
            reservation("dev-3"),
            reservation("dev-3", key: "again"),  // CN twice in the group
            reservation("dev-4", key: "key:dev-1"),  // dev-1's key
            reservation("dev-5"),
        ]) { r in
            signedGroups.append(r.map(\.cn))
            return r.map { content($0) }
        }
        #expect(results.map { (try? $0.get())?.content.cn } == ["dev-1", nil, "dev-3", nil, nil, "dev-5"])
        #expect(results.compactMap { try? $0.get().seq } == [2, 3, 4])
        let rules = results.map { result -> String? in
            if case .failure(let e) = result { return e.rule }
            return nil
        }
        #expect(rules == [nil, "unique-cn", nil, "unique-cn", "unique-public-key", nil])
        // Only what was accepted is signed (SQLite and PostgreSQL once for the group; memory once each).
        #expect(signedGroups.flatMap { $0 } == ["dev-1", "dev-3", "dev-5"])
        let events = try await ledger.events(recordSeq: nil, limit: nil).filter { $0.seq > before }
        #expect(events.map(\.content.kind) == [.issued, .refused, .issued, .refused, .refused, .issued])
        #expect(events.filter { $0.content.kind == .refused }.map(\.content.cn) == ["dev-2", "dev-3", "dev-4"])
        #expect(try await ledger.count() == 4)
        #expect(try await ledger.verify().isIntact)
    }

    @Test("a group commit whose signing fails commits nothing, not even its refusals", arguments: Backend.allCases)
    func issueEachFailure(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        try await issue(ledger, "dev-2")
        let heads = try await ledger.heads()
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            _ = try await ledger.issueEach([reservation("dev-1"), reservation("dev-2", key: "x")]) { _ in
                throw Boom()
            }
        }
        #expect(try await ledger.heads() == heads, "a failed group must leave the ledger as it was")
        #expect(try await ledger.record(cn: "dev-1") == nil)
    }

    @Test(
        "a large group commit (SQLite signs it in slices while it inserts) keeps request order and its refusals in place",
        arguments: Backend.allCases)
    func issueEachLarge(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        try await issue(ledger, "dev-050")
        let before = try await ledger.heads().eventsSeq
        // dev-050's CN and (at dev-100) its key are held already: SQLite looks a large group up in bulk, then
        // those one by one.
        let group = (1...300).map { reservation(String(format: "dev-%03d", $0), key: $0 == 100 ? "key:dev-050" : nil) }
        let accepted = group.map(\.cn).filter { $0 != "dev-050" && $0 != "dev-100" }
        let signed = SignedCNs()
        let results = try await ledger.issueEach(group) { r in
            signed.append(r.map(\.cn))
            return r.map { content($0) }
        }
        #expect(results.compactMap { try? $0.get().content.cn } == accepted)
        #expect(results.compactMap { try? $0.get().seq } == Array(2...299))
        let rules = results.enumerated().compactMap { i, result -> String? in
            if case .failure(let e) = result { return "\(i):\(e.rule ?? "")" }
            return nil
        }
        #expect(rules == ["49:unique-cn", "99:unique-public-key"])
        #expect(signed.all == accepted, "every accepted reservation signed once, in order")
        let events = try await ledger.events(recordSeq: nil, limit: nil).filter { $0.seq > before }
        #expect(events.map(\.content.kind) == (1...300).map { $0 == 50 || $0 == 100 ? .refused : .issued })
        #expect(try await ledger.count() == 299)
        #expect(try await ledger.verify().isIntact)

        // A later slice that fails to sign: nothing of the group is committed (the memory ledger has no shared
        // commit: one transaction per reservation).
        guard backend != .memory else { return }
        let heads = try await ledger.heads()
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            _ = try await ledger.issueEach((301...600).map { reservation("dev-\($0)") }) { r in
                if r.contains(where: { $0.cn == "dev-500" }) { throw Boom() }
                return r.map { content($0) }
            }
        }
        #expect(try await ledger.heads() == heads)
    }

    @Test("a large batch commits whole, in order, or nothing when one CN is refused", arguments: Backend.allCases)
    func issueBatchLarge(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        let first = (1...200).map { reservation("a-\($0)") }
        let records = try await ledger.issueBatch(first) { r in r.map { content($0) } }
        #expect(records.map(\.content.cn) == first.map(\.cn))
        #expect(records.map(\.seq) == Array(1...200))
        let heads = try await ledger.heads()
        let second = (1...200).map { reservation($0 == 150 ? "a-7" : "b-\($0)") }
        let signed = SignedCNs()
        await #expect(throws: KeylineError(.policyRefusal, "")) {
            _ = try await ledger.issueBatch(second) { r in
                signed.append(r.map(\.cn))
                return r.map { content($0) }
            }
        }
        #expect(signed.all.isEmpty, "nothing is signed before every reservation passed")
        #expect(try await ledger.count() == 200)
        #expect(try await ledger.heads().recordsSeq == heads.recordsSeq)
        #expect(try await ledger.verify().isIntact)
    }

    @Test("state changes are events, and verify checks they agree", arguments: Backend.allCases)
    func transitions(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        let r = try await issue(ledger, "dev-1")
        try await ledger.transition(
            recordSeq: r.seq, to: .delivered,
            event: EventContent(
                kind: .delivered, recordSeq: r.seq, cn: "dev-1", detail: "read-back ok", stationID: "station-test",
                operatorName: "op", at: t0))
        #expect(try await ledger.record(cn: "dev-1")?.state == .delivered)
        let events = try await ledger.events(recordSeq: r.seq, limit: nil)
        #expect(events.map(\.content.kind) == [.issued, .delivered])
        #expect(try await ledger.verify().isIntact)
    }

    @Test("queries filter by state, profile and prefix, in order", arguments: Backend.allCases)
    func queries(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        for cn in ["a-1", "a-2", "b-1"] { try await issue(ledger, cn) }
        #expect(try await ledger.records(RecordQuery(cnPrefix: "a-")).map(\.content.cn) == ["a-1", "a-2"])
        #expect(try await ledger.records(RecordQuery(afterSeq: 1, limit: 1)).map(\.seq) == [2])
        #expect(try await ledger.records(RecordQuery(state: .revoked)).isEmpty)
        #expect(try await ledger.records(RecordQuery(profile: "default")).count == 3)
        let some = try await ledger.records(cns: ["a-2", "missing", "b-1"])
        #expect(Set(some.keys) == ["a-2", "b-1"])
        #expect(some["a-2"]?.seq == 2)
    }
}

@Suite("Ledger streaming")
struct LedgerStreamingTests {
    @Test(
        "forEachRecord streams the same records as records(), in order, with every filter", arguments: Backend.allCases)
    func streams(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        let early = t0
        let late = t0.addingTimeInterval(3600)
        for (i, cn) in ["a-1", "a-2", "b-1", "b-2"].enumerated() {
            var c = content(reservation(cn), at: i < 2 ? early : late)
            c.workOrder = i % 2 == 0 ? "WO-1" : "WO-2"
            let fixed = c
            try await ledger.issue(reservation(cn)) { _ in fixed }
        }
        let queries = [
            RecordQuery(), RecordQuery(afterSeq: 2), RecordQuery(workOrder: "WO-1"), RecordQuery(createdSince: late),
            RecordQuery(cnPrefix: "b-", workOrder: "WO-2"), RecordQuery(limit: 1),
        ]
        let expected: [[String]] = [
            ["a-1", "a-2", "b-1", "b-2"], ["b-1", "b-2"], ["a-1", "b-1"], ["b-1", "b-2"], ["b-2"], ["a-1"],
        ]
        for (q, want) in zip(queries, expected) {
            var seen: [String] = []
            try await ledger.forEachRecord(q) { seen.append($0.content.cn) }
            #expect(seen == want)
            #expect(try await ledger.records(q).map(\.content.cn) == want)
        }
        let head = try await ledger.head()
        #expect(head.seq == 4)
        #expect(head.hash == (try await ledger.record(seq: 4))?.hash)
    }

    @Test(
        "device attributes round-trip, are covered by the hash, and records without them hash as before",
        arguments: Backend.allCases)
    func attributes(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        var c = content(reservation("dev-a"))
        let plainHash = ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: c)
        c.attributes = DeviceAttributes(
            description: "gw dev-a", tags: ["x", "y"], productPRN: "prn:p", cohortPRN: nil, target: nil)
        let fixed = c
        let r = try await ledger.issue(reservation("dev-a")) { _ in fixed }
        #expect(r.hash != plainHash)
        #expect(try await ledger.record(cn: "dev-a")?.content.attributes == fixed.attributes)
        let plain = content(reservation("dev-b"))
        let r2 = try await ledger.issue(reservation("dev-b")) { _ in plain }
        #expect(try await ledger.record(cn: "dev-b")?.content.attributes == nil)
        #expect(r2.hash == ChainHash.record(seq: 2, prevHash: r.hash, content: plain))
        #expect(try await ledger.verify().isIntact)
    }

    @Test("an empty ledger's head is the genesis", arguments: Backend.allCases)
    func emptyHead(_ backend: Backend) async throws {
        let head = try await backend.make().head()
        #expect(head.seq == 0 && head.hash == LedgerRecord.genesisHash)
    }
}

@Suite("Ledger tamper detection")
struct TamperTests {
    func memoryWithRecords(_ n: Int) async throws -> InMemoryLedger {
        let ledger = InMemoryLedger(stationID: "station-test")
        for i in 1...n { try await issue(ledger, "dev-\(i)") }
        return ledger
    }

    @Test("in memory: an edited record is named by its sequence number")
    func editedMemory() async throws {
        let ledger = try await memoryWithRecords(5)
        ledger.tamper { $0[2].content.cn = "evil" }
        let report = try await ledger.verify()
        #expect(report.firstBadRecordSeq == 3)
    }

    @Test("in memory: a deleted record is named")
    func deletedMemory() async throws {
        let ledger = try await memoryWithRecords(5)
        ledger.tamper { $0.remove(at: 1) }
        #expect(try await ledger.verify().firstBadRecordSeq == 2)
    }
}

@Suite("SQLite ledger on disk")
struct SQLiteLedgerTests {
    func make(_ n: Int) async throws -> (SQLiteLedger, String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keyline-sqlite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("ledger.sqlite").path
        let ledger = try SQLiteLedger(path: path, stationID: "station-test", create: true)
        for i in 1...n { try await issue(ledger, "dev-\(i)") }
        return (ledger, path)
    }

    /// Opens the file as an attacker would: raw SQL, triggers dropped.
    func attack(_ path: String, _ sql: String) throws {
        let db = try DatabaseQueue(path: path)
        try db.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA foreign_keys = OFF")
            for t in ["records_no_delete", "records_no_rewrite", "events_no_delete", "events_no_update"] {
                try db.execute(sql: "DROP TRIGGER IF EXISTS \(t)")
            }
            try db.execute(sql: sql)
        }
    }

    @Test("the database runs in WAL mode with synchronous=FULL")
    func durability() async throws {
        let (ledger, _) = try await make(1)
        #expect(try ledger.pragma("journal_mode") == "wal")
        #expect(try ledger.pragma("synchronous") == "2", "2 is FULL")
    }

    /// Runs raw SQL synchronously; true when SQLite refused it.
    func refused(_ db: DatabaseQueue, _ sql: String) -> Bool {
        do {
            try db.write { try $0.execute(sql: sql) }
            return false
        } catch {
            return true
        }
    }

    @Test("triggers refuse deleting or rewriting history while they are in place")
    func triggers() async throws {
        let (_, path) = try await make(2)
        let db = try DatabaseQueue(path: path)
        #expect(refused(db, "DELETE FROM records WHERE seq = 1"))
        #expect(refused(db, "UPDATE records SET cn = 'x' WHERE seq = 1"))
        #expect(refused(db, "UPDATE records SET hash = 'x' WHERE seq = 1"))
        #expect(refused(db, "UPDATE events SET detail = 'x' WHERE seq = 1"))
        #expect(refused(db, "DELETE FROM events"))
        #expect(!refused(db, "UPDATE records SET state = 'failed' WHERE seq = 1"), "the state column stays writable")
    }

    @Test(
        "verify names the first bad sequence number after raw edits",
        arguments: [
            ("UPDATE records SET cn = 'evil' WHERE seq = 3", Int64(3)),
            ("UPDATE records SET cert_der = x'00' WHERE seq = 4", Int64(4)),
            ("DELETE FROM records WHERE seq = 2", Int64(2)),
            ("UPDATE records SET state = 'revoked' WHERE seq = 5", Int64(5)),
            ("UPDATE records SET seq = 100 WHERE seq = 5", Int64(5)),
            ("UPDATE records SET has_attributes = 1, description = 'rewritten' WHERE seq = 2", Int64(2)),
        ])
    func rawEdits(_ sql: String, _ expected: Int64) async throws {
        let (ledger, path) = try await make(5)
        #expect(try await ledger.verify().isIntact)
        try attack(path, sql)
        let report = try await ledger.verify()
        #expect(!report.isIntact)
        #expect(report.firstBadRecordSeq == expected, "\(report.problems)")
    }

    @Test("swapping two records' contents is detected at the first of them")
    func swapped() async throws {
        let (ledger, path) = try await make(5)
        let cols = "cn, serial_hex, cert_sha256, pubkey_sha256, hardware_id, cert_der, hash, prev_hash"
        try attack(
            path,
            """
            CREATE TEMP TABLE s AS SELECT seq, \(cols) FROM records WHERE seq IN (2, 4);
            UPDATE records SET cn = 'tmp-' || seq, serial_hex = 'tmp-' || seq, cert_sha256 = 'tmp-' || seq, pubkey_sha256 = 'tmp-' || seq WHERE seq IN (2, 4);
            UPDATE records SET (\(cols)) = (SELECT \(cols) FROM s WHERE s.seq = 4) WHERE seq = 2;
            UPDATE records SET (\(cols)) = (SELECT \(cols) FROM s WHERE s.seq = 2) WHERE seq = 4;
            """)
        #expect(try await ledger.record(seq: 2)?.content.cn == "dev-4")
        let report = try await ledger.verify()
        #expect(report.firstBadRecordSeq == 2, "\(report.problems)")
    }

    @Test("an edited or deleted event is named by its sequence number")
    func events() async throws {
        let (ledger, path) = try await make(3)
        try attack(path, "UPDATE events SET detail = 'nothing to see' WHERE seq = 2")
        #expect(try await ledger.verify().firstBadEventSeq == 2)
        let (ledger2, path2) = try await make(3)
        try attack(path2, "DELETE FROM events WHERE seq = 1")
        let r2 = try await ledger2.verify()
        #expect(r2.firstBadEventSeq == 1)
        #expect(r2.firstBadRecordSeq == 1, "record 1 lost its 'issued' event")
    }

    @Test("a locked database is a temporary failure (exit 75), and nothing is committed")
    func locked() async throws {
        let (ledger, path) = try await make(1)
        let locked = DispatchSemaphore(value: 0)
        let released = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let blocker = try! DatabaseQueue(path: path)
            try! blocker.inDatabase { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                locked.signal()
                Thread.sleep(forTimeInterval: 6)
                try db.execute(sql: "ROLLBACK")
            }
            released.signal()
        }
        locked.wait()
        do {
            try await issue(ledger, "dev-2")
            Issue.record("issued while the database was locked")
        } catch let e as KeylineError {
            #expect(e.code == .temporaryFailure)
            #expect(e.exitStatus == 75)
        }
        released.wait()
        #expect(try await ledger.count() == 1)
        #expect(try await ledger.record(cn: "dev-2") == nil)
    }

    @Test("a missing ledger file is unavailable unless creating")
    func missing() {
        #expect(throws: KeylineError(.unavailable, "")) {
            try SQLiteLedger(path: "/nonexistent-\(UUID().uuidString)/ledger.sqlite", stationID: "x")
        }
    }
}

/// The CNs `signAll` was called with, in call order (the SQLite ledger calls it from a thread of its own).
final class SignedCNs: @unchecked Sendable {
    private let lock = NSLock()
    private var calls: [[String]] = []
    func append(_ cns: [String]) { lock.withLock { calls.append(cns) } }
    var all: [String] { lock.withLock { calls.flatMap { $0 } } }
}
