import Foundation
import KeylineCore

/// What the ledger checks and holds before anything is signed: the CN and the public key must be new.
public struct Reservation: Sendable, Equatable {
    public var cn: String
    /// SHA-256 of the SubjectPublicKeyInfo DER, upper-case hex.
    public var publicKeySHA256: String
    /// Who asked, for the refusal event a uniqueness refusal leaves.
    public var operatorName: String

    public init(cn: String, publicKeySHA256: String, operatorName: String = "") {
        self.cn = cn
        self.publicKeySHA256 = publicKeySHA256
        self.operatorName = operatorName
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

    public init(
        afterSeq: Int64? = nil, limit: Int? = nil, state: RecordState? = nil, profile: String? = nil,
        cnPrefix: String? = nil, workOrder: String? = nil, createdSince: Date? = nil
    ) {
        self.afterSeq = afterSeq
        self.limit = limit
        self.state = state
        self.profile = profile
        self.cnPrefix = cnPrefix
        self.workOrder = workOrder
        self.createdSince = createdSince
    }

    /// Whether `r` passes the filters (for implementations that filter in memory).
    public func matches(_ r: LedgerRecord) -> Bool {
        (afterSeq.map { r.seq > $0 } ?? true) && (state.map { r.state == $0 } ?? true)
            && (profile.map { r.content.profile == $0 } ?? true)
            && (cnPrefix.map { r.content.cn.hasPrefix($0) } ?? true)
            && (workOrder.map { r.content.workOrder == $0 } ?? true)
            && (createdSince.map { r.content.createdAt >= $0 } ?? true)
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
    /// (against the ledger and against each other) before `signAll` is called once with all of them, so the caller
    /// may sign them in parallel; it returns their contents in the same order.
    func issueBatch(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [LedgerRecord]

    /// Appends an event to the audit trail.
    @discardableResult
    func appendEvent(_ content: EventContent) async throws -> LedgerEvent

    /// Changes a record's state and appends the event that says why, in one transaction.
    func transition(recordSeq: Int64, to state: RecordState, event: EventContent) async throws

    /// The record for `cn`, if one was issued.
    func record(cn: String) async throws -> LedgerRecord?

    /// The records for many CNs in one read (absent CNs are simply missing from the result).
    func records(cns: [String]) async throws -> [String: LedgerRecord]

    /// The record with sequence number `seq`.
    func record(seq: Int64) async throws -> LedgerRecord?

    /// Records in sequence order, filtered.
    func records(_ query: RecordQuery) async throws -> [LedgerRecord]

    /// Streams records in sequence order through `body`, holding one at a time: memory stays flat whatever the
    /// ledger's size. Returns the chain head of the same snapshot the records were read from.
    @discardableResult
    func forEachRecord(
        _ query: RecordQuery, _ body: (LedgerRecord) throws -> Void
    ) async throws -> (seq: Int64, hash: String)

    /// The chain head: the last record's sequence number and hash (0 and the genesis hash when empty).
    func head() async throws -> (seq: Int64, hash: String)

    /// Events about one record, in order; all events when `recordSeq` is nil (bounded by `limit`).
    func events(recordSeq: Int64?, limit: Int?) async throws -> [LedgerEvent]

    /// How many records there are.
    func count() async throws -> Int

    /// Walks both hash chains and the record states and reports the first bad sequence numbers.
    func verify() async throws -> VerificationReport
}

extension Ledger {
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
