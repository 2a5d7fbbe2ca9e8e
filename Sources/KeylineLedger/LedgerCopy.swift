import Foundation
import KeylineCore
import PostgresNIO

/// What `keyline ledger copy` moved and found.
public struct LedgerCopyReport: Sendable, Equatable {
    public var stationID: String
    public var records: Int
    public var events: Int
    /// The source's heads when the copy began (what was copied: nothing newer).
    public var sourceHeads: LedgerHeads
    /// The destination chain as verified after the commit.
    public var verification: VerificationReport
    public var destinationHeads: LedgerHeads

    /// The copy is good when the destination chain verifies and ends where the source did.
    public var matches: Bool { verification.isIntact && destinationHeads == sourceHeads }
}

/// Ends a page early (thrown from inside a streaming read).
struct PageFull: Error {}

extension Ledger {
    /// Up to `limit` events after `afterSeq`, in order (a page of ``forEachEvent(kinds:afterSeq:_:)``).
    func eventPage(afterSeq: Int64, limit: Int) async throws -> [LedgerEvent] {
        var out: [LedgerEvent] = []
        do {
            try await forEachEvent(kinds: nil, afterSeq: afterSeq) { event in
                out.append(event)
                if out.count >= limit { throw PageFull() }
            }
        } catch is PageFull {}
        return out
    }
}

extension PostgresLedger {
    /// Copies a station's whole ledger (usually its SQLite file) into this station's empty chain: every record and
    /// event with its own sequence number, state, timestamps and hashes, so the chain continues unbroken. Runs in
    /// one transaction, so a failure leaves the destination as it was; then verifies the destination and compares
    /// its heads with the source's.
    ///
    /// Refuses a source whose own chain does not verify, a destination chain that already holds anything, and
    /// (by the unique indexes) a CN, serial, certificate or key another station already holds.
    public func copyChain(
        from source: any Ledger, pageSize: Int = 500, progress: (@Sendable (Int, Int) -> Void)? = nil
    ) async throws -> LedgerCopyReport {
        let check = try await source.verify()
        guard check.isIntact else {
            let first =
                check.firstBadRecordSeq.map { "record seq \($0)" } ?? check.firstBadEventSeq.map { "event seq \($0)" }
                ?? "unknown"
            throw KeylineError(
                .integrity, "the source ledger does not verify (first problem at \(first)); nothing was copied")
        }
        let sourceHeads = try await source.heads()
        let chain = stationID
        let counts: [Int]
        do {
            counts = try await copyRows(from: source, through: sourceHeads, pageSize: pageSize, progress: progress)
        } catch let e as KeylineError where e.code == .policyRefusal {
            // A unique index: another station already holds one of the source's CNs, serials, certificates or keys.
            throw KeylineError(
                .dataError,
                "the ledger database already holds part of this ledger under another station (\(e.reason)); nothing was copied"
            )
        }
        let verification = try await verify()
        let destinationHeads = try await heads()
        return LedgerCopyReport(
            stationID: chain, records: counts[0], events: counts[1], sourceHeads: sourceHeads,
            verification: verification, destinationHeads: destinationHeads)
    }

    func copyRows(
        from source: any Ledger, through sourceHeads: LedgerHeads, pageSize: Int,
        progress: (@Sendable (Int, Int) -> Void)?
    ) async throws -> [Int] {
        let chain = stationID
        return try await write("copying the ledger") { conn -> [Int] in
            // The station's row is made here, inside the copy's transaction, so a refused copy leaves nothing.
            try await conn.exec(
                sql(
                    """
                    INSERT INTO @.stations (station_id, record_seq, record_hash, event_seq, event_hash)
                    VALUES ($1, 0, $2, 0, $2) ON CONFLICT (station_id) DO NOTHING
                    """, chain, LedgerRecord.genesisHash), logger: logger)
            var heads = try await lockHeads(conn)
            guard heads.recordsSeq == 0, heads.eventsSeq == 0 else {
                throw KeylineError(
                    .dataError,
                    "station '\(chain)' already has \(heads.recordsSeq) records and \(heads.eventsSeq) events in the ledger database \(place); a ledger is copied only into an empty chain"
                )
            }
            var records = 0
            var after: Int64 = 0
            while after < sourceHeads.recordsSeq {
                let page = try await source.records(RecordQuery(afterSeq: after, limit: pageSize)).filter {
                    $0.seq <= sourceHeads.recordsSeq
                }
                guard let last = page.last else { break }
                try await insertRecords(conn, page)
                records += page.count
                after = last.seq
                heads.recordsSeq = last.seq
                heads.recordsHash = last.hash
                progress?(records, 0)
            }
            var events = 0
            after = 0
            while after < sourceHeads.eventsSeq {
                let page = try await source.eventPage(afterSeq: after, limit: pageSize).filter {
                    $0.seq <= sourceHeads.eventsSeq
                }
                guard let last = page.last else { break }
                try await insertEvents(conn, page)
                events += page.count
                after = last.seq
                heads.eventsSeq = last.seq
                heads.eventsHash = last.hash
                progress?(records, events)
            }
            try await saveHeads(conn, heads)
            // Before COMMIT: the copied chain must verify where it now lies, and end where the source did; and the
            // source must not have moved meanwhile (every change to a ledger appends an event, so unchanged heads
            // mean an unchanged ledger). Otherwise all of it rolls back.
            let check = try await verifyIn(conn, chain: chain)
            guard check.isIntact else {
                throw KeylineError(
                    .integrity,
                    "the copied chain does not verify (\(check.problems.first ?? "")); nothing was copied")
            }
            guard heads == sourceHeads else {
                throw KeylineError(
                    .integrity,
                    "the copy ends at \(heads.summary) but the source at \(sourceHeads.summary); nothing was copied")
            }
            let now = try await source.heads()
            guard now == sourceHeads else {
                throw KeylineError(
                    .temporaryFailure,
                    "the source ledger changed during the copy (is the station still running?); nothing was copied: stop the station and copy again"
                )
            }
            return [records, events]
        }
    }

    /// One multi-row INSERT for a page of records, their stored hashes kept as they are.
    func insertRecords(_ conn: PostgresConnection, _ page: [LedgerRecord]) async throws {
        try await insertRows(
            conn, table: "records",
            columns: """
                chain, seq, cn, serial_hex, cert_sha256, pubkey_sha256, ca_sha256, ca_name, profile, station_id, \
                operator, key_origin, hardware_id, work_order, not_before, not_after, cert_der, state, created_at, \
                updated_at, prev_hash, hash, has_attributes, description, tags, product_prn, cohort_prn, target, \
                reissue_of
                """,
            rows: page.map { r in
                let c = r.content
                return [
                    stationID, r.seq, c.cn, c.serialHex, c.certificateFingerprint, c.publicKeySHA256, c.caFingerprint,
                    c.caName, c.profile, c.stationID, c.operatorName, c.keyOrigin.rawValue, c.hardwareID, c.workOrder,
                    Int64(Timestamp.seconds(c.notBefore)), Int64(Timestamp.seconds(c.notAfter)),
                    Data(c.certificateDER), r.state.rawValue, Timestamp.millis(c.createdAt),
                    Timestamp.millis(r.updatedAt), r.prevHash, r.hash, c.attributes != nil, c.attributes?.description,
                    c.attributes?.tags.joined(separator: ","), c.attributes?.productPRN, c.attributes?.cohortPRN,
                    c.attributes?.target, c.reissueOf,
                ]
            })
    }

    /// One multi-row INSERT for a page of events, their stored hashes kept as they are.
    func insertEvents(_ conn: PostgresConnection, _ page: [LedgerEvent]) async throws {
        try await insertRows(
            conn, table: "events",
            columns: "chain, seq, kind, record_seq, cn, detail, station_id, operator, at, prev_hash, hash",
            rows: page.map { e in
                let c = e.content
                return [
                    stationID, e.seq, c.kind.rawValue, c.recordSeq, c.cn, c.detail, c.stationID, c.operatorName,
                    Timestamp.millis(c.at), e.prevHash, e.hash,
                ]
            })
    }

    /// `INSERT INTO table (columns) VALUES (...), (...)`, every value bound ($1, $2, ... across the rows).
    func insertRows(
        _ conn: PostgresConnection, table: String, columns: String,
        rows: [[(any PostgresThrowingDynamicTypeEncodable)?]]
    ) async throws {
        guard let width = rows.first?.count else { return }
        var b = PostgresBindings(capacity: rows.count * width)
        var tuples: [String] = []
        for (i, row) in rows.enumerated() {
            for v in row {
                if let v { try b.append(v) } else { b.appendNull() }
            }
            tuples.append("(" + (1...width).map { "$\(i * width + $0)" }.joined(separator: ", ") + ")")
        }
        try await conn.exec(
            PostgresQuery(
                unsafeSQL: "INSERT INTO \(schema).\(table) (\(columns)) VALUES \(tuples.joined(separator: ", "))",
                binds: b), logger: logger)
    }
}

extension LedgerHeads {
    public var summary: String {
        "records to seq \(recordsSeq) (\(recordsHash.prefix(16))…), events to seq \(eventsSeq) (\(eventsHash.prefix(16))…)"
    }
}
