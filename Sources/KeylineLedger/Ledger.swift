import Foundation
import KeylineCore

/// What the ledger checks and holds before anything is signed: the CN and the public key must be new.
public struct Reservation: Sendable, Equatable {
    public var cn: String
    /// SHA-256 of the SubjectPublicKeyInfo DER, upper-case hex.
    public var publicKeySHA256: String
    /// Who asked, for the refusal event a uniqueness refusal leaves.
    public var operatorName: String
    /// Asks to issue a CN again whose last certificate was revoked (rework). Without it a known CN is refused;
    /// with it, a CN that was never issued or whose certificate is not revoked is refused.
    public var reissue: Bool
    /// Set by the ledger when it reserves a re-issue: the revoked record being replaced. The signed content must
    /// carry the same value.
    public var reissueOf: Int64?

    public init(cn: String, publicKeySHA256: String, operatorName: String = "", reissue: Bool = false) {
        self.cn = cn
        self.publicKeySHA256 = publicKeySHA256
        self.operatorName = operatorName
        self.reissue = reissue
        self.reissueOf = nil
    }

    /// Why this reservation cannot be made given the CN's latest record (nil when it can).
    public func cnRefusal(latest: LedgerRecord?) -> KeylineError? {
        switch (latest, reissue) {
        case (nil, false): return nil
        case (nil, true):
            return .refused("reissue", "CN '\(cn)' was never issued here, so there is nothing to re-issue")
        case (let r?, false):
            let hint =
                r.state == .revoked
                ? "; it was revoked, so a reworked device may be issued again with --reissue" : ""
            return .refused(
                "unique-cn", "CN '\(cn)' was already issued (ledger seq \(r.seq), \(r.state.rawValue))\(hint)")
        case (let r?, true):
            guard r.state == .revoked else {
                return .refused(
                    "reissue",
                    "CN '\(cn)' has a certificate in state \(r.state.rawValue) (ledger seq \(r.seq)); revoke it first with 'keyline ledger revoke \(cn) --reason rework'"
                )
            }
            return nil
        }
    }
}

extension Reservation {
    /// The refusal for a public key the ledger already holds (every backend words it the same).
    public var keyTakenRefusal: KeylineError {
        .refused(
            "unique-public-key", "public key \(publicKeySHA256.prefix(16))… already belongs to another certificate")
    }
}

extension LedgerRecord {
    /// The record a ledger appends after `head` for content signed for reservation `r`; refuses (internal error)
    /// content that does not match its reservation.
    public static func issued(
        _ content: RecordContent, for r: Reservation, after head: (seq: Int64, hash: String)
    ) throws -> LedgerRecord {
        guard content.cn == r.cn, content.publicKeySHA256 == r.publicKeySHA256, content.reissueOf == r.reissueOf
        else { throw KeylineError(.internalError, "signed content does not match its reservation") }
        let seq = head.seq + 1
        return LedgerRecord(
            seq: seq, content: content, state: .issued, updatedAt: content.createdAt, prevHash: head.hash,
            hash: ChainHash.record(seq: seq, prevHash: head.hash, content: content))
    }

    /// The `issued` event that goes with a new record.
    public var issuedEvent: EventContent {
        EventContent(
            kind: .issued, recordSeq: seq, cn: content.cn, detail: LedgerRecord.issuedDetail(content),
            stationID: content.stationID, operatorName: content.operatorName, at: content.createdAt)
    }
}

extension Reservation {
    /// The `refused` event a refused reservation leaves.
    public func refusedEvent(_ error: KeylineError, stationID: String) -> EventContent {
        EventContent(
            kind: .refused, recordSeq: nil, cn: cn, detail: error.reason, stationID: stationID,
            operatorName: operatorName, at: Date())
    }
}

/// The CNs and public keys seen so far in one batch: a batch may not name either twice.
public struct BatchUniqueness {
    private var cns: Set<String> = []
    private var keys: Set<String> = []

    public init() {}

    /// Notes `r`; the refusal when its CN or key was already in the batch.
    public mutating func refusal(_ r: Reservation) -> KeylineError? {
        if !cns.insert(r.cn).inserted {
            return .refused("unique-cn", "CN '\(r.cn)' is given twice in one batch")
        }
        if !keys.insert(r.publicKeySHA256).inserted {
            return .refused(
                "unique-public-key", "public key \(r.publicKeySHA256.prefix(16))… is given twice in one batch")
        }
        return nil
    }
}

/// Both chain heads of one snapshot: what a checkpoint signs.
public struct LedgerHeads: Sendable, Equatable {
    public var recordsSeq: Int64
    public var recordsHash: String
    public var eventsSeq: Int64
    public var eventsHash: String

    public init(recordsSeq: Int64, recordsHash: String, eventsSeq: Int64, eventsHash: String) {
        self.recordsSeq = recordsSeq
        self.recordsHash = recordsHash
        self.eventsSeq = eventsSeq
        self.eventsHash = eventsHash
    }
}

/// Filters for listing records.
public struct RecordQuery: Sendable {
    public var afterSeq: Int64?
    public var limit: Int?
    public var state: RecordState?
    public var profile: String?
    public var cnPrefix: String?
    public var workOrder: String?
    /// Only records created at or after this time.
    public var createdSince: Date?
    /// Only records created before this time.
    public var createdBefore: Date?
    /// Only the record with this serial (upper-case hex).
    public var serialHex: String?
    /// Only the record with this certificate SHA-256 (upper-case hex).
    public var fingerprint: String?
    /// Only records issued by the CA of this name.
    public var caName: String?

    public init(
        afterSeq: Int64? = nil, limit: Int? = nil, state: RecordState? = nil, profile: String? = nil,
        cnPrefix: String? = nil, workOrder: String? = nil, createdSince: Date? = nil, createdBefore: Date? = nil,
        serialHex: String? = nil, fingerprint: String? = nil, caName: String? = nil
    ) {
        self.afterSeq = afterSeq
        self.limit = limit
        self.state = state
        self.profile = profile
        self.cnPrefix = cnPrefix
        self.workOrder = workOrder
        self.createdSince = createdSince
        self.createdBefore = createdBefore
        self.serialHex = serialHex
        self.fingerprint = fingerprint
        self.caName = caName
    }

    /// Whether `r` passes the filters (for implementations that filter in memory).
    public func matches(_ r: LedgerRecord) -> Bool {
        (afterSeq.map { r.seq > $0 } ?? true) && (state.map { r.state == $0 } ?? true)
            && (profile.map { r.content.profile == $0 } ?? true)
            && (cnPrefix.map { r.content.cn.hasPrefix($0) } ?? true)
            && (workOrder.map { r.content.workOrder == $0 } ?? true)
            && (createdSince.map { r.content.createdAt >= $0 } ?? true)
            && (createdBefore.map { r.content.createdAt < $0 } ?? true)
            && (serialHex.map { r.content.serialHex == $0 } ?? true)
            && (fingerprint.map { r.content.certificateFingerprint == $0 } ?? true)
            && (caName.map { r.content.caName == $0 } ?? true)
    }
}

/// The outcome of `ledger verify`.
public struct VerificationReport: Sendable, Equatable {
    /// How many records and events were read.
    public var recordsChecked: Int
    public var eventsChecked: Int
    /// The first record sequence number found wrong (edited, missing, inserted, reordered), if any.
    public var firstBadRecordSeq: Int64?
    /// The first event sequence number found wrong, if any.
    public var firstBadEventSeq: Int64?
    /// One line per problem, first problem first (at most a bounded number are kept).
    public var problems: [String]
    /// The hash of the last record (the chain head), genesis when empty.
    public var headHash: String
    public var headSeq: Int64

    public var isIntact: Bool { problems.isEmpty }

    public init() {
        recordsChecked = 0
        eventsChecked = 0
        problems = []
        headHash = LedgerRecord.genesisHash
        headSeq = 0
    }
}

/// The ledger seam: every issued certificate, hash-chained, and an append-only trail of events.
///
/// Implementations: ``InMemoryLedger`` (tests, dry runs) and ``SQLiteLedger``; each passes the same contract tests.
/// The one rule every implementation keeps: ``issue(_:sign:)`` checks uniqueness, calls `sign` and commits the
/// record durably, in that order, inside one transaction; if it returns, the record is on disk, and if it throws,
/// nothing of the record is.
public protocol Ledger: Sendable {
    /// The station this ledger writes for (records and events carry it).
    var stationID: String { get }

    /// Reserve → sign → commit, atomically. `sign` runs only after the CN and public key were found unused and
    /// returns the record's content; a uniqueness refusal throws a policy refusal naming `unique-cn` or
    /// `unique-public-key`, and records a `refused` event.
    func issue(_ reservation: Reservation, sign: (Reservation) throws -> RecordContent) async throws -> LedgerRecord

    /// The same for many requests in one transaction: all are committed, or none. Every reservation is checked
    /// (against the ledger and against each other) before `signAll` is first called; it returns the contents of the
    /// reservations it is given, in the same order, and may sign them in parallel. A backend calls it once with all
    /// of them, or (SQLite, for a large group) once per consecutive slice, in order, on a thread of its own while it
    /// inserts the slices before: never two calls at once, and every call returns before this does. So `signAll`
    /// must not rely on the calling task (task-locals, actor isolation).
    func issueBatch(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [LedgerRecord]

    /// Many requests in one transaction, each judged on its own (group commit): a refused reservation leaves its
    /// `refused` event and is skipped, `signAll` is called with the accepted ones in order (at once or in slices,
    /// as for ``issueBatch(_:signAll:)``), and they are all
    /// committed together with those events. Returns one result per reservation, in order. An error that is not a
    /// refusal (the ledger, or `signAll`) commits nothing and is thrown. A backend without its own implementation
    /// runs one transaction per reservation.
    func issueEach(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [Result<LedgerRecord, KeylineError>]

    /// Appends an event to the audit trail.
    @discardableResult
    func appendEvent(_ content: EventContent) async throws -> LedgerEvent

    /// Changes a record's state and appends the event that says why, in one transaction. Refuses (data error) a
    /// change ``RecordState/canBecome(_:)`` does not allow, such as anything after `revoked`, and returns the
    /// record as it now is.
    @discardableResult
    func transition(recordSeq: Int64, to state: RecordState, event: EventContent) async throws -> LedgerRecord

    /// The latest record for `cn` (a re-issued CN has several), if one was issued.
    func record(cn: String) async throws -> LedgerRecord?

    /// Every record for `cn`, oldest first: one, or more after re-issues.
    func history(cn: String) async throws -> [LedgerRecord]

    /// The latest records for many CNs in one read (absent CNs are simply missing from the result).
    func records(cns: [String]) async throws -> [String: LedgerRecord]

    /// The record with sequence number `seq`.
    func record(seq: Int64) async throws -> LedgerRecord?

    /// The records with these sequence numbers, in sequence order (absent ones are left out), in one read.
    func records(seqs: [Int64]) async throws -> [LedgerRecord]

    /// Records in sequence order, filtered.
    func records(_ query: RecordQuery) async throws -> [LedgerRecord]

    /// Streams records in sequence order through `body`, holding one at a time: memory stays flat whatever the
    /// ledger's size. Returns the chain head of the same snapshot the records were read from.
    @discardableResult
    func forEachRecord(
        _ query: RecordQuery, _ body: (LedgerRecord) throws -> Void
    ) async throws -> (seq: Int64, hash: String)

    /// Streams only the sequence number and state of each record the query selects, in sequence order: the
    /// cheap pass for questions about which records exist (reconcile's "never seen by the backend").
    func forEachRecordState(_ query: RecordQuery, _ body: (Int64, RecordState) throws -> Void) async throws

    /// The chain head: the last record's sequence number and hash (0 and the genesis hash when empty).
    func head() async throws -> (seq: Int64, hash: String)

    /// Both chain heads, read in one snapshot.
    func heads() async throws -> LedgerHeads

    /// How many records have `seq` ≤ `recordSeq` and how many events have `seq` ≤ `eventSeq` (what a checkpoint
    /// covering those sequence numbers should still find: all of them).
    func counts(
        throughRecordSeq recordSeq: Int64, throughEventSeq eventSeq: Int64
    ) async throws -> (
        records: Int64, events: Int64
    )

    /// Events about one record, in order; all events when `recordSeq` is nil (bounded by `limit`).
    func events(recordSeq: Int64?, limit: Int?) async throws -> [LedgerEvent]

    /// The event with sequence number `seq`.
    func event(seq: Int64) async throws -> LedgerEvent?

    /// Streams events of the given kinds (all when nil) after `afterSeq`, in order, one at a time.
    func forEachEvent(
        kinds: Set<EventKind>?, afterSeq: Int64, _ body: (LedgerEvent) throws -> Void
    ) async throws

    /// How many records there are.
    func count() async throws -> Int

    /// Walks both hash chains and the record states and reports the first bad sequence numbers.
    func verify() async throws -> VerificationReport
}

extension Ledger {
    /// One transaction per reservation: correct for every backend, without the shared commit.
    public func issueEach(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [Result<LedgerRecord, KeylineError>] {
        try await issueEachSeparately(reservations, signAll: signAll)
    }

    /// ``issueEach(_:signAll:)`` with one transaction per reservation.
    public func issueEachSeparately(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [Result<LedgerRecord, KeylineError>] {
        var results: [Result<LedgerRecord, KeylineError>] = []
        for r in reservations {
            do {
                results.append(.success(try await issueBatch([r], signAll: signAll)[0]))
            } catch let error as KeylineError where error.code == .policyRefusal {
                results.append(.failure(error))
            }
        }
        return results
    }

    /// Records a refusal as an audit event (the only trace a refused request leaves).
    @discardableResult
    public func recordRefusal(cn: String?, reason: String, operatorName: String, at: Date) async throws -> LedgerEvent {
        try await appendEvent(
            EventContent(
                kind: .refused, recordSeq: nil, cn: cn, detail: reason, stationID: stationID,
                operatorName: operatorName, at: at)
        )
    }
}
