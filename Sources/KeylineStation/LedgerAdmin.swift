import Crypto
import Foundation
import KeylineCore
import KeylineCustody
import KeylineLedger

/// Rework and scrap: revoking a record with its reason.
public enum Revocation {
    /// Revokes the latest certificate of `cn`: the record becomes `revoked` and a `revoked` event says why.
    ///
    /// Throws ``KeylineError/Code/dataError`` when the CN was never issued or is already revoked, and
    /// ``KeylineError/Code/usage`` for a note that is not one short line.
    @discardableResult
    public static func revoke(
        station: Station, cn: String, reason: RevocationReason, note: String?, operatorName: String,
        at: Date = Date()
    ) async throws -> LedgerRecord {
        if let note, note.contains(where: \.isNewline) || note.count > 200 {
            throw KeylineError(.usage, "--note must be one line of at most 200 characters")
        }
        guard let record = try await station.ledger.record(cn: cn) else {
            throw KeylineError(.dataError, "no certificate for CN '\(cn)' in the ledger")
        }
        return try await station.ledger.transition(
            recordSeq: record.seq, to: .revoked,
            event: EventContent(
                kind: .revoked, recordSeq: record.seq, cn: cn, detail: detail(reason: reason, note: note),
                stationID: station.config.stationID, operatorName: operatorName, at: at))
    }

    /// The revoked event's detail: `reason rework` or `reason rework; note: TEXT`.
    public static func detail(reason: RevocationReason, note: String?) -> String {
        "reason \(reason.rawValue)" + (note.map { $0.isEmpty ? "" : "; note: \($0)" } ?? "")
    }

    /// The reason and note back out of a revoked event's detail.
    public static func parse(detail: String) -> (reason: String, note: String?) {
        var text = Substring(detail)
        if text.hasPrefix("reason ") { text = text.dropFirst("reason ".count) }
        guard let split = text.range(of: "; note: ") else { return (String(text), nil) }
        return (String(text[..<split.lowerBound]), String(text[split.upperBound...]))
    }

    /// One certificate to deactivate in the backend.
    public struct Row: Sendable, Encodable {
        public var identifier: String
        public var fingerprint: String
        public var serial: String
        public var ca: String
        public var reason: String
        @Nullable public var note: String?
        public var revoked_at: String
        public var ledger_seq: Int64
        public var event_seq: Int64
    }

    /// Every revocation (after `since` when given), in the order they were made.
    public static func rows(station: Station, since: Date?) async throws -> [Row] {
        var revoked: [LedgerEvent] = []
        try await station.ledger.forEachEvent(kinds: [.revoked], afterSeq: 0) { e in
            if let since, e.content.at < since { return }
            revoked.append(e)
        }
        var rows: [Row] = []
        for e in revoked {
            guard let seq = e.content.recordSeq, let r = try await station.ledger.record(seq: seq) else { continue }
            let (reason, note) = parse(detail: e.content.detail)
            rows.append(
                Row(
                    identifier: r.content.cn, fingerprint: r.content.certificateFingerprint,
                    serial: r.content.serialHex,
                    ca: r.content.caName, reason: reason, note: note, revoked_at: Timestamp.isoMillis(e.content.at),
                    ledger_seq: r.seq, event_seq: e.seq))
        }
        return rows
    }
}

/// Signed checkpoints of the ledger's heads: the outside anchor that makes truncation of the newest records
/// detectable.
public enum LedgerCheckpoint {
    /// Signs the ledger's current heads with the station key and returns the file's text with what it says. The
    /// caller writes it, then calls ``recordEvent(station:checkpoint:operatorName:)``, so that no event stands for a
    /// checkpoint that was never written.
    public static func make(
        station: Station, now: Date = Date()
    ) async throws -> (
        text: String, checkpoint: Checkpoint
    ) {
        let signing = try StationSigningKey.load(in: station.config.directory)
        let heads = try await station.ledger.heads()
        let checkpoint = Checkpoint(
            stationID: station.config.stationID, recordsSeq: heads.recordsSeq, recordsHash: heads.recordsHash,
            eventsSeq: heads.eventsSeq, eventsHash: heads.eventsHash, createdAt: now,
            signingKeySHA256: Hex.sha256(signing.key.publicKey.derRepresentation))
        return (try Checkpoint.signed(checkpoint, key: signing.key), checkpoint)
    }

    /// Records that `checkpoint` was handed out: a `checkpoint` event, after the heads it signed.
    public static func recordEvent(station: Station, checkpoint c: Checkpoint, operatorName: String) async throws {
        try await station.ledger.appendEvent(
            EventContent(
                kind: .checkpoint, recordSeq: nil, cn: nil,
                detail: "records \(c.recordsSeq) \(c.recordsHash), events \(c.eventsSeq) \(c.eventsHash)",
                stationID: station.config.stationID, operatorName: operatorName, at: c.createdAt))
    }

    /// What `ledger verify --checkpoint` found.
    public struct Verdict: Sendable {
        public var checkpoint: Checkpoint
        /// The ledger's last record now (for messages).
        public var ledgerRecordsSeq: Int64
        /// Records and events the checkpoint covered that the ledger no longer has (0 when none), counted, so rows
        /// deleted in the middle count too.
        public var missingRecords: Int64
        public var missingEvents: Int64
        /// The checkpoint's last record or event is present but differs (history rewritten).
        public var recordDiffers: Bool
        public var eventDiffers: Bool
        /// Records and events added since the checkpoint.
        public var newerRecords: Int64
        public var newerEvents: Int64

        public var holds: Bool { missingRecords == 0 && missingEvents == 0 && !recordDiffers && !eventDiffers }

        /// One line naming what is wrong, for the error.
        public var problem: String? {
            let c = checkpoint
            let when = Timestamp.isoMillis(c.createdAt)
            if missingRecords > 0 {
                return
                    "the ledger is missing \(missingRecords) record(s) that the checkpoint of \(when) covered (it covered records 1–\(c.recordsSeq); the ledger's last record is now seq \(ledgerRecordsSeq))"
            }
            if recordDiffers {
                return
                    "record seq \(c.recordsSeq) no longer has the hash the checkpoint of \(when) signed (records were rewritten or replaced)"
            }
            if missingEvents > 0 {
                return
                    "the ledger is missing \(missingEvents) event(s) that the checkpoint of \(when) covered (it covered events 1–\(c.eventsSeq))"
            }
            if eventDiffers {
                return
                    "event seq \(c.eventsSeq) no longer has the hash the checkpoint of \(when) signed (events were rewritten)"
            }
            return nil
        }
    }

    /// Checks the checkpoint in `text` against the station's ledger. The signature is checked with the public key
    /// at `publicKeyPath` (QA's own copy, ideally), else the station's `station-signing.pem`.
    public static func verify(
        station: Station, text: String, source: String, publicKeyPath: String?
    ) async throws -> Verdict {
        let keyPath = publicKeyPath ?? "\(station.config.directory)/\(StationSigningKey.publicPath)"
        let publicKey = try StationSigningKey.publicKey(at: keyPath)
        let checkpoint = try Checkpoint.parse(text, publicKey: publicKey, source: source)
        guard checkpoint.stationID == station.config.stationID else {
            throw KeylineError(
                .dataError,
                "\(source) is a checkpoint of station '\(checkpoint.stationID)', not of this station ('\(station.config.stationID)')"
            )
        }
        let heads = try await station.ledger.heads()
        let present = try await station.ledger.counts(
            throughRecordSeq: checkpoint.recordsSeq, throughEventSeq: checkpoint.eventsSeq)
        var v = Verdict(
            checkpoint: checkpoint, ledgerRecordsSeq: heads.recordsSeq,
            missingRecords: max(0, checkpoint.recordsSeq - present.records),
            missingEvents: max(0, checkpoint.eventsSeq - present.events), recordDiffers: false, eventDiffers: false,
            newerRecords: max(0, heads.recordsSeq - checkpoint.recordsSeq),
            newerEvents: max(0, heads.eventsSeq - checkpoint.eventsSeq))
        if checkpoint.recordsSeq > 0, let r = try await station.ledger.record(seq: checkpoint.recordsSeq) {
            v.recordDiffers = r.hash != checkpoint.recordsHash
        }
        if checkpoint.eventsSeq > 0, let e = try await station.ledger.event(seq: checkpoint.eventsSeq) {
            v.eventDiffers = e.hash != checkpoint.eventsHash
        }
        return v
    }
}
