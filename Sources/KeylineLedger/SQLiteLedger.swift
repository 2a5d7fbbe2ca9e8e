import Foundation
import GRDB
import KeylineCore

/// The embedded ledger: one SQLite file through GRDB, WAL journal, `synchronous=FULL`, versioned migrations,
/// triggers that refuse to delete or rewrite history.
///
/// Every lookup on the issuance path is an index probe (CN, public key, the chain head), so issuing one
/// certificate costs the same with ten records or a million.
public final class SQLiteLedger: Ledger {
    public let stationID: String
    public let path: String
    private let dbQueue: DatabaseQueue

    /// Opens (or with `create`, creates) the ledger at `path` and runs pending migrations.
    ///
    /// Throws ``KeylineError/Code/unavailable`` when the file is missing and `create` is false, or cannot be opened.
    public init(path: String, stationID: String, create: Bool = false) throws {
        self.stationID = stationID
        self.path = path
        if !create && !FileManager.default.fileExists(atPath: path) {
            throw KeylineError(
                .unavailable, "ledger not found at \(path) (run 'keyline init' or fix 'ledger' in station.toml)")
        }
        var config = Configuration()
        config.busyMode = .timeout(5)
        // WAL by hand: GRDB's `journalMode = .wal` also lowers synchronous to NORMAL, which can lose the last
        // commits on power loss. A certificate may leave only after its commit is on disk, so FULL it is.
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // 32 MiB of page cache keeps the unique indexes' upper levels in memory as the ledger grows.
            try db.execute(sql: "PRAGMA cache_size = -32768")
        }
        do {
            dbQueue = try DatabaseQueue(path: path, configuration: config)
            try Self.migrator.migrate(dbQueue)
        } catch let error as DatabaseError {
            throw Self.map(error, context: "opening the ledger at \(path)")
        }
    }

    /// The schema, one migration per version. Never edit a shipped migration; add the next one.
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE records (
                        seq INTEGER PRIMARY KEY,
                        cn TEXT NOT NULL,
                        serial_hex TEXT NOT NULL,
                        cert_sha256 TEXT NOT NULL,
                        pubkey_sha256 TEXT NOT NULL,
                        ca_sha256 TEXT NOT NULL,
                        ca_name TEXT NOT NULL,
                        profile TEXT NOT NULL,
                        station_id TEXT NOT NULL,
                        operator TEXT NOT NULL,
                        key_origin TEXT NOT NULL CHECK (key_origin IN ('device', 'station')),
                        hardware_id TEXT,
                        work_order TEXT,
                        not_before INTEGER NOT NULL,
                        not_after INTEGER NOT NULL,
                        cert_der BLOB NOT NULL,
                        state TEXT NOT NULL CHECK (state IN ('issued', 'delivered', 'failed', 'revoked')),
                        created_at INTEGER NOT NULL,
                        updated_at INTEGER NOT NULL,
                        prev_hash TEXT NOT NULL,
                        hash TEXT NOT NULL
                    );
                    CREATE UNIQUE INDEX records_cn ON records(cn);
                    CREATE UNIQUE INDEX records_serial ON records(serial_hex);
                    CREATE UNIQUE INDEX records_cert ON records(cert_sha256);
                    CREATE UNIQUE INDEX records_pubkey ON records(pubkey_sha256);
                    CREATE INDEX records_profile ON records(profile, seq);
                    CREATE TABLE events (
                        seq INTEGER PRIMARY KEY,
                        kind TEXT NOT NULL,
                        record_seq INTEGER REFERENCES records(seq),
                        cn TEXT,
                        detail TEXT NOT NULL,
                        station_id TEXT NOT NULL,
                        operator TEXT NOT NULL,
                        at INTEGER NOT NULL,
                        prev_hash TEXT NOT NULL,
                        hash TEXT NOT NULL
                    );
                    CREATE INDEX events_record ON events(record_seq, seq);
                    CREATE TRIGGER records_no_delete BEFORE DELETE ON records
                    BEGIN SELECT RAISE(ABORT, 'keyline ledger: records are append-only'); END;
                    CREATE TRIGGER records_no_rewrite BEFORE UPDATE ON records
                    WHEN NEW.seq IS NOT OLD.seq OR NEW.cn IS NOT OLD.cn OR NEW.serial_hex IS NOT OLD.serial_hex
                      OR NEW.cert_sha256 IS NOT OLD.cert_sha256 OR NEW.pubkey_sha256 IS NOT OLD.pubkey_sha256
                      OR NEW.ca_sha256 IS NOT OLD.ca_sha256 OR NEW.ca_name IS NOT OLD.ca_name OR NEW.profile IS NOT OLD.profile
                      OR NEW.station_id IS NOT OLD.station_id OR NEW.operator IS NOT OLD.operator
                      OR NEW.key_origin IS NOT OLD.key_origin OR NEW.hardware_id IS NOT OLD.hardware_id
                      OR NEW.work_order IS NOT OLD.work_order OR NEW.not_before IS NOT OLD.not_before
                      OR NEW.not_after IS NOT OLD.not_after OR NEW.cert_der IS NOT OLD.cert_der
                      OR NEW.created_at IS NOT OLD.created_at OR NEW.prev_hash IS NOT OLD.prev_hash OR NEW.hash IS NOT OLD.hash
                    BEGIN SELECT RAISE(ABORT, 'keyline ledger: only a record''s state may change'); END;
                    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
                    BEGIN SELECT RAISE(ABORT, 'keyline ledger: events are append-only'); END;
                    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
                    BEGIN SELECT RAISE(ABORT, 'keyline ledger: events are append-only'); END;
                    """)
        }
        // v2: the device's backend attributes, fixed at issuance. The rewrite trigger is re-created to cover them.
        m.registerMigration("v2") { db in
            try db.execute(
                sql: """
                    ALTER TABLE records ADD COLUMN has_attributes INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE records ADD COLUMN description TEXT;
                    ALTER TABLE records ADD COLUMN tags TEXT;
                    ALTER TABLE records ADD COLUMN product_prn TEXT;
                    ALTER TABLE records ADD COLUMN cohort_prn TEXT;
                    ALTER TABLE records ADD COLUMN target TEXT;
                    CREATE INDEX records_work_order ON records(work_order, seq);
                    DROP TRIGGER records_no_rewrite;
                    CREATE TRIGGER records_no_rewrite BEFORE UPDATE ON records
                    WHEN NEW.seq IS NOT OLD.seq OR NEW.cn IS NOT OLD.cn OR NEW.serial_hex IS NOT OLD.serial_hex
                      OR NEW.cert_sha256 IS NOT OLD.cert_sha256 OR NEW.pubkey_sha256 IS NOT OLD.pubkey_sha256
                      OR NEW.ca_sha256 IS NOT OLD.ca_sha256 OR NEW.ca_name IS NOT OLD.ca_name OR NEW.profile IS NOT OLD.profile
                      OR NEW.station_id IS NOT OLD.station_id OR NEW.operator IS NOT OLD.operator
                      OR NEW.key_origin IS NOT OLD.key_origin OR NEW.hardware_id IS NOT OLD.hardware_id
                      OR NEW.work_order IS NOT OLD.work_order OR NEW.not_before IS NOT OLD.not_before
                      OR NEW.not_after IS NOT OLD.not_after OR NEW.cert_der IS NOT OLD.cert_der
                      OR NEW.created_at IS NOT OLD.created_at OR NEW.prev_hash IS NOT OLD.prev_hash OR NEW.hash IS NOT OLD.hash
                      OR NEW.has_attributes IS NOT OLD.has_attributes OR NEW.description IS NOT OLD.description
                      OR NEW.tags IS NOT OLD.tags OR NEW.product_prn IS NOT OLD.product_prn
                      OR NEW.cohort_prn IS NOT OLD.cohort_prn OR NEW.target IS NOT OLD.target
                    BEGIN SELECT RAISE(ABORT, 'keyline ledger: only a record''s state may change'); END;
                    """)
        }
        // v3: re-issue after rework. A CN may have several records, but at most one that is not revoked; the
        // new record names the revoked one it replaces (hashed, so it cannot be moved later).
        m.registerMigration("v3") { db in
            try db.execute(
                sql: """
                    ALTER TABLE records ADD COLUMN reissue_of INTEGER REFERENCES records(seq);
                    DROP INDEX records_cn;
                    CREATE INDEX records_cn ON records(cn, seq);
                    CREATE UNIQUE INDEX records_cn_current ON records(cn) WHERE state <> 'revoked';
                    DROP TRIGGER records_no_rewrite;
                    CREATE TRIGGER records_no_rewrite BEFORE UPDATE ON records
                    WHEN NEW.seq IS NOT OLD.seq OR NEW.cn IS NOT OLD.cn OR NEW.serial_hex IS NOT OLD.serial_hex
                      OR NEW.cert_sha256 IS NOT OLD.cert_sha256 OR NEW.pubkey_sha256 IS NOT OLD.pubkey_sha256
                      OR NEW.ca_sha256 IS NOT OLD.ca_sha256 OR NEW.ca_name IS NOT OLD.ca_name OR NEW.profile IS NOT OLD.profile
                      OR NEW.station_id IS NOT OLD.station_id OR NEW.operator IS NOT OLD.operator
                      OR NEW.key_origin IS NOT OLD.key_origin OR NEW.hardware_id IS NOT OLD.hardware_id
                      OR NEW.work_order IS NOT OLD.work_order OR NEW.not_before IS NOT OLD.not_before
                      OR NEW.not_after IS NOT OLD.not_after OR NEW.cert_der IS NOT OLD.cert_der
                      OR NEW.created_at IS NOT OLD.created_at OR NEW.prev_hash IS NOT OLD.prev_hash OR NEW.hash IS NOT OLD.hash
                      OR NEW.has_attributes IS NOT OLD.has_attributes OR NEW.description IS NOT OLD.description
                      OR NEW.tags IS NOT OLD.tags OR NEW.product_prn IS NOT OLD.product_prn
                      OR NEW.cohort_prn IS NOT OLD.cohort_prn OR NEW.target IS NOT OLD.target
                      OR NEW.reissue_of IS NOT OLD.reissue_of
                    BEGIN SELECT RAISE(ABORT, 'keyline ledger: only a record''s state may change'); END;
                    """)
        }
        return m
    }

    /// Asks the kernel to read the ledger file into its page cache, on a thread of its own, and returns at once. The
    /// daemon calls it when it starts: at a million records each issuance touches about ten index pages nobody read
    /// lately, and right after a boot they would come from disk, one device at a time (docs/operations.md, "A large
    /// ledger and the page cache"). Best effort: any failure is ignored.
    public func prefetch() {
        let paths = [path, path + "-wal"]
        Thread.detachNewThread {
            for path in paths {
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { continue }
                defer { close(fd) }
                var st = stat()
                guard fstat(fd, &st) == 0 else { continue }
                // In slices, so each call returns soon; the kernel reads ahead asynchronously.
                let slice: off_t = 64 << 20
                var offset: off_t = 0
                while offset < st.st_size {
                    _ = posix_fadvise(fd, offset, min(slice, st.st_size - offset), POSIX_FADV_WILLNEED)
                    offset += slice
                }
            }
        }
    }

    /// The value of a PRAGMA on the ledger's own connection (durability settings are per connection).
    func pragma(_ name: String) throws -> String? {
        try dbQueue.read { db in try String.fetchOne(db, sql: "PRAGMA \(name)") }
    }

    // MARK: - Ledger

    public func issue(
        _ reservation: Reservation, sign: (Reservation) throws -> RecordContent
    ) async throws -> LedgerRecord {
        try issueSync([reservation], each: false) { try $0.map(sign) }[0].get()
    }

    public func issueBatch(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [LedgerRecord] {
        try issueSync(reservations, each: false, signAll: signAll).map { try $0.get() }
    }

    public func issueEach(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [Result<LedgerRecord, KeylineError>] {
        try issueSync(reservations, each: true, signAll: signAll)
    }

    /// Reserve → sign → commit in one transaction. Without `each`, the first refusal rolls the batch back, is
    /// recorded in a transaction of its own and thrown; with it, refused reservations are skipped and their events
    /// committed with the accepted ones.
    private func issueSync(
        _ reservations: [Reservation], each: Bool, signAll: ([Reservation]) throws -> [RecordContent]
    ) throws -> [Result<LedgerRecord, KeylineError>] {
        var refusal: (reservation: Reservation, error: KeylineError)?
        var out: [Result<LedgerRecord, KeylineError>] = []
        try guarded("committing to the ledger") {
            try dbQueue.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    out = []
                    refusal = nil
                    // Reserve: every CN and key must be new to the ledger and to this batch.
                    var batch = BatchUniqueness()
                    var reservations = reservations
                    var refused: [Int: KeylineError] = [:]
                    // A large group asks the ledger in a few statements which of its CNs and keys it holds; only
                    // those (and re-issues) are looked at one by one.
                    let known = reservations.count >= Self.lookupInBulk ? try Self.known(db, reservations) : nil
                    for i in reservations.indices {
                        let r = reservations[i]
                        let isNew =
                            known.map {
                                !r.reissue && !$0.cns.contains(r.cn) && !$0.keys.contains(r.publicKeySHA256)
                            } ?? false
                        if let error = try (isNew ? nil : Self.refusal(db, &reservations[i])) ?? batch.refusal(r) {
                            guard each else {
                                refusal = (r, error)
                                return .rollback
                            }
                            refused[i] = error
                        }
                    }
                    // Sign the accepted ones, then commit them with the refusals' events, in request order. A
                    // large group is signed in slices on another thread while this one inserts the slices before.
                    let accepted = reservations.indices.filter { refused[$0] == nil }.map { reservations[$0] }
                    try SliceSigner.signing(accepted, signAll) { next in
                        var head = try Self.head(db)
                        var eventHead = try Self.eventHead(db)
                        for (i, r) in reservations.enumerated() {
                            if let error = refused[i] {
                                let event = try Self.insertEvent(
                                    db, r.refusedEvent(error, stationID: stationID), after: eventHead)
                                eventHead = (event.seq, event.hash)
                                out.append(.failure(error))
                                continue
                            }
                            let record = try LedgerRecord.issued(next(), for: r, after: head)
                            try Self.insert(db, record)
                            let event = try Self.insertEvent(db, record.issuedEvent, after: eventHead)
                            eventHead = (event.seq, event.hash)
                            head = (record.seq, record.hash)
                            out.append(.success(record))
                        }
                    }
                    return .commit
                }
                if let (r, error) = refusal {
                    try db.inTransaction(.immediate) {
                        try Self.insertEvent(db, r.refusedEvent(error, stationID: stationID))
                        return .commit
                    }
                }
            }
        }
        if let refusal { throw refusal.error }
        return out
    }

    @discardableResult
    public func appendEvent(_ content: EventContent) async throws -> LedgerEvent {
        try guarded("appending an event") {
            try dbQueue.writeWithoutTransaction { db in
                var event: LedgerEvent?
                try db.inTransaction(.immediate) {
                    event = try Self.insertEvent(db, content)
                    return .commit
                }
                return event!
            }
        }
    }

    @discardableResult
    public func transition(
        recordSeq: Int64, to state: RecordState, event: EventContent
    ) async throws
        -> LedgerRecord
    {
        try guarded("changing a record's state") {
            try dbQueue.writeWithoutTransaction { db in
                var updated: LedgerRecord?
                try db.inTransaction(.immediate) {
                    guard
                        let current = try Row.fetchOne(
                            db.cachedStatement(sql: "SELECT \(Self.recordColumns) FROM records WHERE seq = ?"),
                            arguments: [recordSeq]
                        ).map(Self.record)
                    else {
                        throw KeylineError(.dataError, "no record with seq \(recordSeq)")
                    }
                    if let error = LedgerRecord.transitionRefusal(current, to: state) { throw error }
                    // Cached: compiling an UPDATE compiles the records triggers too (about 200 µs a device on the line).
                    try db.cachedStatement(sql: "UPDATE records SET state = ?, updated_at = ? WHERE seq = ?")
                        .execute(arguments: [state.rawValue, Timestamp.millis(event.at), recordSeq])
                    try Self.insertEvent(db, event)
                    var record = current
                    record.state = state
                    record.updatedAt = event.at
                    updated = record
                    return .commit
                }
                return updated!
            }
        }
    }

    private static let latestByCN =
        "SELECT \(SQLiteLedger.recordColumns) FROM records WHERE cn = ? ORDER BY seq DESC LIMIT 1"

    public func record(cn: String) async throws -> LedgerRecord? {
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                try Row.fetchOne(db.cachedStatement(sql: Self.latestByCN), arguments: [cn]).map(Self.record)
            }
        }
    }

    public func history(cn: String) async throws -> [LedgerRecord] {
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                try Row.fetchAll(
                    db.cachedStatement(sql: "SELECT \(Self.recordColumns) FROM records WHERE cn = ? ORDER BY seq"),
                    arguments: [cn]
                )
                .map(Self.record)
            }
        }
    }

    public func records(cns: [String]) async throws -> [String: LedgerRecord] {
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                // One statement per slice of CNs (ordered by seq, so the last row of a CN is its latest), read
                // through a cursor: a statement and a row copy per CN cost more than the lookups themselves.
                var out: [String: LedgerRecord] = [:]
                out.reserveCapacity(cns.count)
                try Self.inSlices(Array(Set(cns))) { slice, marks in
                    let cursor = try Row.fetchCursor(
                        db, sql: "SELECT \(Self.recordColumns) FROM records WHERE cn IN (\(marks)) ORDER BY seq",
                        arguments: StatementArguments(Array(slice)))
                    while let row = try cursor.next() {
                        let r = Self.record(row)
                        out[r.content.cn] = r
                    }
                }
                return out
            }
        }
    }

    public func records(seqs: [Int64]) async throws -> [LedgerRecord] {
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                var out: [LedgerRecord] = []
                out.reserveCapacity(seqs.count)
                try Self.inSlices(Array(Set(seqs)).sorted()) { slice, marks in
                    let cursor = try Row.fetchCursor(
                        db, sql: "SELECT \(Self.recordColumns) FROM records WHERE seq IN (\(marks)) ORDER BY seq",
                        arguments: StatementArguments(Array(slice)))
                    while let row = try cursor.next() { out.append(Self.record(row)) }
                }
                return out
            }
        }
    }

    public func record(seq: Int64) async throws -> LedgerRecord? {
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT \(Self.recordColumns) FROM records WHERE seq = ?"), arguments: [seq]
                ).map(
                    Self.record)
            }
        }
    }

    /// The SELECT for a query; every filter is a bound argument.
    static func select(_ q: RecordQuery, columns: String = recordColumns) -> (String, StatementArguments) {
        var clauses: [String] = []
        var arguments: StatementArguments = []
        if let after = q.afterSeq {
            clauses.append("seq > ?")
            arguments += [after]
        }
        if let state = q.state {
            clauses.append("state = ?")
            arguments += [state.rawValue]
        }
        if let profile = q.profile {
            clauses.append("profile = ?")
            arguments += [profile]
        }
        if let prefix = q.cnPrefix {
            clauses.append("substr(cn, 1, ?) = ?")
            arguments += [prefix.count, prefix]
        }
        if let workOrder = q.workOrder {
            clauses.append("work_order = ?")
            arguments += [workOrder]
        }
        if let since = q.createdSince {
            clauses.append("created_at >= ?")
            arguments += [Timestamp.millis(since)]
        }
        if let before = q.createdBefore {
            clauses.append("created_at < ?")
            arguments += [Timestamp.millis(before)]
        }
        if let serial = q.serialHex {
            clauses.append("serial_hex = ?")
            arguments += [serial]
        }
        if let fingerprint = q.fingerprint {
            clauses.append("cert_sha256 = ?")
            arguments += [fingerprint]
        }
        if let ca = q.caName {
            clauses.append("ca_name = ?")
            arguments += [ca]
        }
        var sql = "SELECT \(columns) FROM records"
        if !clauses.isEmpty { sql += " WHERE " + clauses.joined(separator: " AND ") }
        sql += " ORDER BY seq"
        if let limit = q.limit { sql += " LIMIT \(limit)" }
        return (sql, arguments)
    }

    public func records(_ q: RecordQuery) async throws -> [LedgerRecord] {
        let (sql, arguments) = Self.select(q)
        return try guarded("reading the ledger") {
            try dbQueue.read { db in try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.record) }
        }
    }

    @discardableResult
    public func forEachRecord(
        _ q: RecordQuery, _ body: (LedgerRecord) throws -> Void
    ) async throws -> (
        seq: Int64, hash: String
    ) {
        try forEachSync(q, body)
    }

    private func forEachSync(
        _ q: RecordQuery, _ body: (LedgerRecord) throws -> Void
    ) throws -> (seq: Int64, hash: String) {
        let (sql, arguments) = Self.select(q)
        return try guarded("reading the ledger") {
            // One read transaction: the head belongs to the same snapshot as the records.
            try dbQueue.read { db in
                let head = try Self.head(db)
                let cursor = try Row.fetchCursor(db, sql: sql, arguments: arguments)
                while let row = try cursor.next() { try body(Self.record(row)) }
                return head
            }
        }
    }

    public func forEachRecordState(_ q: RecordQuery, _ body: (Int64, RecordState) throws -> Void) async throws {
        let (sql, arguments) = Self.select(q, columns: "seq, state")
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                let cursor = try Row.fetchCursor(db, sql: sql, arguments: arguments)
                while let row = try cursor.next() {
                    try body(row[0], RecordState(rawValue: row[1] ?? "") ?? .failed)
                }
            }
        }
    }

    public func head() async throws -> (seq: Int64, hash: String) {
        try guarded("reading the ledger") { try dbQueue.read { db in try Self.head(db) } }
    }

    public func heads() async throws -> LedgerHeads {
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                let records = try Self.head(db)
                let events = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"))
                return LedgerHeads(
                    recordsSeq: records.seq, recordsHash: records.hash, eventsSeq: events?[0] ?? 0,
                    eventsHash: events?[1] ?? LedgerRecord.genesisHash)
            }
        }
    }

    public func counts(
        throughRecordSeq recordSeq: Int64, throughEventSeq eventSeq: Int64
    ) async throws -> (
        records: Int64, events: Int64
    ) {
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                (
                    try Int64.fetchOne(db, sql: "SELECT count(*) FROM records WHERE seq <= ?", arguments: [recordSeq])
                        ?? 0,
                    try Int64.fetchOne(db, sql: "SELECT count(*) FROM events WHERE seq <= ?", arguments: [eventSeq])
                        ?? 0
                )
            }
        }
    }

    public func event(seq: Int64) async throws -> LedgerEvent? {
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT \(Self.eventColumns) FROM events WHERE seq = ?"), arguments: [seq]
                ).map(
                    Self.event)
            }
        }
    }

    public func forEachEvent(
        kinds: Set<EventKind>?, afterSeq: Int64, _ body: (LedgerEvent) throws -> Void
    ) async throws {
        var sql = "SELECT \(Self.eventColumns) FROM events WHERE seq > ?"
        var args: StatementArguments = [afterSeq]
        if let kinds {
            let sorted = kinds.map(\.rawValue).sorted()
            sql += " AND kind IN (\(sorted.map { _ in "?" }.joined(separator: ", ")))"
            args += StatementArguments(sorted)
        }
        sql += " ORDER BY seq"
        try guarded("reading the ledger") {
            try dbQueue.read { db in
                // Cached: the daemon reads the work-order events appended since the last device before every device.
                let cursor = try Row.fetchCursor(db.cachedStatement(sql: sql), arguments: args)
                while let row = try cursor.next() { try body(Self.event(row)) }
            }
        }
    }

    public func events(recordSeq: Int64?, limit: Int?) async throws -> [LedgerEvent] {
        var sql = "SELECT \(Self.eventColumns) FROM events"
        var args: StatementArguments = []
        if let recordSeq {
            sql += " WHERE record_seq = ?"
            args = [recordSeq]
        }
        sql += " ORDER BY seq"
        if let limit { sql += " LIMIT \(limit)" }
        return try guarded("reading the ledger") {
            try dbQueue.read { db in try Row.fetchAll(db, sql: sql, arguments: args).map(Self.event) }
        }
    }

    public func count() async throws -> Int {
        try guarded("reading the ledger") {
            try dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM records") ?? 0 }
        }
    }

    public func verify() async throws -> VerificationReport {
        try guarded("verifying the ledger") {
            try dbQueue.read { db in
                var verifier = ChainVerifier()
                // Records with their state-changing events, merged from two ordered cursors: memory stays flat.
                let records = try Row.fetchCursor(db, sql: "SELECT \(Self.recordColumns) FROM records ORDER BY seq")
                let stateEvents = try Row.fetchCursor(
                    db,
                    sql: """
                        SELECT record_seq, kind FROM events
                        WHERE record_seq IS NOT NULL AND kind IN ('issued', 'delivered', 'failed', 'revoked')
                        ORDER BY record_seq, seq
                        """)
                var pending: (Int64, EventKind)? = try stateEvents.next().map {
                    ($0[0], EventKind(rawValue: $0[1]) ?? .issued)
                }
                while let row = try records.next() {
                    let record = Self.record(row)
                    var kinds: [EventKind] = []
                    while let (seq, kind) = pending, seq <= record.seq {
                        if seq == record.seq { kinds.append(kind) }
                        pending = try stateEvents.next().map { ($0[0], EventKind(rawValue: $0[1]) ?? .issued) }
                    }
                    verifier.add(record: record, stateEvents: kinds)
                }
                let events = try Row.fetchCursor(db, sql: "SELECT \(Self.eventColumns) FROM events ORDER BY seq")
                while let row = try events.next() { verifier.add(event: Self.event(row)) }
                return verifier.report
            }
        }
    }

    // MARK: - SQL helpers

    private static func head(_ db: Database) throws -> (seq: Int64, hash: String) {
        if let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1"))
        {
            return (row[0], row[1])
        }
        return (0, LedgerRecord.genesisHash)
    }

    /// Groups at least this large look their CNs and keys up in bulk (``known(_:_:)``).
    static let lookupInBulk = 16

    /// Which of the reservations' CNs and public keys the ledger already holds: two statements per 500
    /// reservations, where one lookup each cost two statements per reservation.
    private static func known(
        _ db: Database, _ reservations: [Reservation]
    ) throws -> (
        cns: Set<String>, keys: Set<String>
    ) {
        var cns = Set<String>()
        var keys = Set<String>()
        try inSlices(reservations) { slice, marks in
            cns.formUnion(
                try String.fetchAll(
                    db, sql: "SELECT cn FROM records WHERE cn IN (\(marks))",
                    arguments: StatementArguments(slice.map(\.cn))))
            keys.formUnion(
                try String.fetchAll(
                    db, sql: "SELECT pubkey_sha256 FROM records WHERE pubkey_sha256 IN (\(marks))",
                    arguments: StatementArguments(slice.map(\.publicKeySHA256))))
        }
        return (cns, keys)
    }

    /// Calls `body` once per slice of at most 500 values, with the slice's placeholders (`?,?,…`) for an `IN`
    /// list: a few statements cost less than one per value, and 500 stays far below SQLite's parameter limit.
    private static func inSlices<T>(_ values: [T], _ body: (ArraySlice<T>, String) throws -> Void) rethrows {
        var start = 0
        while start < values.count {
            let slice = values[start..<min(start + 500, values.count)]
            try body(slice, Array(repeating: "?", count: slice.count).joined(separator: ","))
            start += slice.count
        }
    }

    private static func refusal(_ db: Database, _ r: inout Reservation) throws -> KeylineError? {
        let latest = try Row.fetchOne(db.cachedStatement(sql: latestByCN), arguments: [r.cn]).map(record)
        if let error = r.cnRefusal(latest: latest) { return error }
        r.reissueOf = r.reissue ? latest?.seq : nil
        if try Bool.fetchOne(
            db.cachedStatement(sql: "SELECT 1 FROM records WHERE pubkey_sha256 = ?"), arguments: [r.publicKeySHA256])
            != nil
        {
            return r.keyTakenRefusal
        }
        return nil
    }

    private static func insert(_ db: Database, _ r: LedgerRecord) throws {
        let c = r.content
        try db.cachedStatement(
            sql: """
                INSERT INTO records (seq, cn, serial_hex, cert_sha256, pubkey_sha256, ca_sha256, ca_name, profile, station_id,
                  operator, key_origin, hardware_id, work_order, not_before, not_after, cert_der, state, created_at, updated_at,
                  prev_hash, hash, has_attributes, description, tags, product_prn, cohort_prn, target, reissue_of)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [
                r.seq, c.cn, c.serialHex, c.certificateFingerprint, c.publicKeySHA256, c.caFingerprint, c.caName,
                c.profile, c.stationID, c.operatorName, c.keyOrigin.rawValue, c.hardwareID, c.workOrder,
                Timestamp.seconds(c.notBefore), Timestamp.seconds(c.notAfter), Data(c.certificateDER), r.state.rawValue,
                Timestamp.millis(c.createdAt), Timestamp.millis(r.updatedAt), r.prevHash, r.hash,
                c.attributes == nil ? 0 : 1, c.attributes?.description, c.attributes?.tags.joined(separator: ","),
                c.attributes?.productPRN, c.attributes?.cohortPRN, c.attributes?.target, c.reissueOf,
            ])
    }

    /// The last event's sequence number and hash (0 and the genesis hash when there is none).
    private static func eventHead(_ db: Database) throws -> (seq: Int64, hash: String) {
        if let row = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"))
        {
            return (row[0], row[1])
        }
        return (0, LedgerRecord.genesisHash)
    }

    /// Appends an event after `head` (read from the ledger when not given; a transaction that appends several
    /// carries it from one to the next).
    @discardableResult
    private static func insertEvent(
        _ db: Database, _ content: EventContent, after head: (seq: Int64, hash: String)? = nil
    ) throws -> LedgerEvent {
        let (last, prev) = try head ?? eventHead(db)
        let seq = last + 1
        let event = LedgerEvent(
            seq: seq, content: content, prevHash: prev,
            hash: ChainHash.event(seq: seq, prevHash: prev, content: content))
        try db.cachedStatement(
            sql: """
                INSERT INTO events (seq, kind, record_seq, cn, detail, station_id, operator, at, prev_hash, hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(
            arguments: [
                seq, content.kind.rawValue, content.recordSeq, content.cn, content.detail, content.stationID,
                content.operatorName, Timestamp.millis(content.at), prev, event.hash,
            ])
        return event
    }

    /// Every record column, in the order ``record(_:)`` reads them by position. Reading by name cost a
    /// case-insensitive name lookup per column per row (a third of a million-record reconcile).
    static let recordColumns = """
        seq, cn, serial_hex, cert_sha256, pubkey_sha256, ca_sha256, ca_name, profile, station_id, operator, \
        key_origin, hardware_id, work_order, not_before, not_after, cert_der, state, created_at, updated_at, \
        prev_hash, hash, has_attributes, description, tags, product_prn, cohort_prn, target, reissue_of
        """
    static let eventColumns = "seq, kind, record_seq, cn, detail, station_id, operator, at, prev_hash, hash"

    static func record(_ row: Row) -> LedgerRecord {
        let der: Data = row[15] ?? Data()
        let content = RecordContent(
            cn: row[1], serialHex: row[2], certificateFingerprint: row[3], publicKeySHA256: row[4],
            caFingerprint: row[5], caName: row[6], profile: row[7], stationID: row[8], operatorName: row[9],
            keyOrigin: KeyOrigin(rawValue: row[10] ?? "") ?? .device, hardwareID: row[11], workOrder: row[12],
            notBefore: Date(timeIntervalSince1970: Double(row[13] as Int64)),
            notAfter: Date(timeIntervalSince1970: Double(row[14] as Int64)), certificateDER: Array(der),
            createdAt: Timestamp.fromMillis(row[17]), attributes: attributes(row), reissueOf: row[27])
        return LedgerRecord(
            seq: row[0], content: content, state: RecordState(rawValue: row[16] ?? "") ?? .failed,
            updatedAt: Timestamp.fromMillis(row[18]), prevHash: row[19], hash: row[20])
    }

    static func attributes(_ row: Row) -> DeviceAttributes? {
        guard (row[21] as Int?) == 1 else { return nil }
        let tags: String = row[23] ?? ""
        return DeviceAttributes(
            description: row[22] ?? "", tags: tags.isEmpty ? [] : tags.split(separator: ",").map(String.init),
            productPRN: row[24], cohortPRN: row[25], target: row[26])
    }

    static func event(_ row: Row) -> LedgerEvent {
        let content = EventContent(
            kind: EventKind(rawValue: row[1] ?? "") ?? .refused, recordSeq: row[2], cn: row[3], detail: row[4],
            stationID: row[5], operatorName: row[6], at: Timestamp.fromMillis(row[7]))
        return LedgerEvent(seq: row[0], content: content, prevHash: row[8], hash: row[9])
    }

    // MARK: - Errors

    private func guarded<T>(_ context: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DatabaseError {
            throw Self.map(error, context: context)
        }
    }

    /// Maps SQLite failures to Keyline's exit-status classes: locked/busy is temporary, a full disk or I/O error
    /// is I/O, a file that cannot be opened is unavailable.
    static func map(_ error: DatabaseError, context: String) -> KeylineError {
        let what = "\(context): \(error.message ?? "\(error.resultCode)")"
        switch error.resultCode {
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return KeylineError(.temporaryFailure, "ledger is locked by another process, try again (\(what))")
        case .SQLITE_FULL: return KeylineError(.ioError, "disk full (\(what))")
        case .SQLITE_IOERR, .SQLITE_READONLY: return KeylineError(.ioError, what)
        case .SQLITE_CANTOPEN, .SQLITE_NOTADB, .SQLITE_CORRUPT, .SQLITE_PERM, .SQLITE_AUTH:
            return KeylineError(.unavailable, what)
        case .SQLITE_CONSTRAINT:
            return KeylineError(
                .policyRefusal, "ledger constraint refused the write (\(what))", rule: "ledger-constraint")
        default: return KeylineError(.internalError, what)
        }
    }
}
