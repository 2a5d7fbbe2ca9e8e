import Foundation
import KeylineCore
import Synchronization

/// A ledger held in memory: for tests and dry runs. Same contract as the durable ledgers, nothing survives the
/// process.
public final class InMemoryLedger: Ledger {
    public let stationID: String

    struct State {
        var records: [LedgerRecord] = []
        var events: [LedgerEvent] = []
        var byCN: [String: Int] = [:]
        var byKey: Set<String> = []
        var bySerial: Set<String> = []
        var byFingerprint: Set<String> = []
    }

    private let state = Mutex(State())

    public init(stationID: String) {
        self.stationID = stationID
    }

    private static func appendEvent(_ s: inout State, _ content: EventContent) -> LedgerEvent {
        let seq = Int64(s.events.count + 1)
        let prev = s.events.last?.hash ?? LedgerRecord.genesisHash
        let event = LedgerEvent(
            seq: seq, content: content, prevHash: prev,
            hash: ChainHash.event(seq: seq, prevHash: prev, content: content))
        s.events.append(event)
        return event
    }

    private static func refusal(_ s: State, _ r: inout Reservation) -> KeylineError? {
        let latest = s.byCN[r.cn].map { s.records[$0] }
        if let error = r.cnRefusal(latest: latest) { return error }
        r.reissueOf = r.reissue ? latest?.seq : nil
        if s.byKey.contains(r.publicKeySHA256) {
            return r.keyTakenRefusal
        }
        return nil
    }

    public func issue(
        _ reservation: Reservation, sign: (Reservation) throws -> RecordContent
    ) async throws -> LedgerRecord {
        try await issueBatch([reservation]) { try $0.map(sign) }[0]
    }

    public func issueBatch(
        _ reservations: [Reservation], signAll: ([Reservation]) throws -> [RecordContent]
    ) async throws -> [LedgerRecord] {
        let outcome: Result<[LedgerRecord], KeylineError> = try state.withLock { s in
            var batch = BatchUniqueness()
            var reservations = reservations
            for i in reservations.indices {
                let r = reservations[i]
                let error = Self.refusal(s, &reservations[i]) ?? batch.refusal(r)
                if let error {
                    _ = Self.appendEvent(
                        &s,
                        EventContent(
                            kind: .refused, recordSeq: nil, cn: r.cn, detail: error.reason, stationID: stationID,
                            operatorName: r.operatorName, at: Date()))
                    return .failure(error)
                }
            }
            let contents = try signAll(reservations)
            guard contents.count == reservations.count else {
                throw KeylineError(.internalError, "signed \(contents.count) of \(reservations.count) reservations")
            }
            var work = s
            var out: [LedgerRecord] = []
            for (r, content) in zip(reservations, contents) {
                let record = try LedgerRecord.issued(
                    content, for: r,
                    after: (Int64(work.records.count), work.records.last?.hash ?? LedgerRecord.genesisHash))
                if work.bySerial.contains(content.serialHex)
                    || work.byFingerprint.contains(content.certificateFingerprint)
                {
                    throw KeylineError(.internalError, "serial or fingerprint collision for CN '\(r.cn)'")
                }
                work.records.append(record)
                work.byCN[r.cn] = Int(record.seq - 1)
                work.byKey.insert(r.publicKeySHA256)
                work.bySerial.insert(content.serialHex)
                work.byFingerprint.insert(content.certificateFingerprint)
                _ = Self.appendEvent(&work, record.issuedEvent)
                out.append(record)
            }
            s = work
            return .success(out)
        }
        switch outcome {
        case .success(let records): return records
        case .failure(let error): throw error
        }
    }

    @discardableResult
    public func appendEvent(_ content: EventContent) async throws -> LedgerEvent {
        state.withLock { s in Self.appendEvent(&s, content) }
    }

    @discardableResult
    public func transition(
        recordSeq: Int64, to newState: RecordState, event: EventContent
    ) async throws
        -> LedgerRecord
    {
        try state.withLock { s in
            guard recordSeq >= 1, recordSeq <= s.records.count else {
                throw KeylineError(.dataError, "no record with seq \(recordSeq)")
            }
            let i = Int(recordSeq - 1)
            if let error = LedgerRecord.transitionRefusal(s.records[i], to: newState) { throw error }
            s.records[i].state = newState
            s.records[i].updatedAt = event.at
            _ = Self.appendEvent(&s, event)
            return s.records[i]
        }
    }

    public func record(cn: String) async throws -> LedgerRecord? {
        state.withLock { s in s.byCN[cn].map { s.records[$0] } }
    }

    public func history(cn: String) async throws -> [LedgerRecord] {
        state.withLock { s in s.records.filter { $0.content.cn == cn } }
    }

    public func heads() async throws -> LedgerHeads {
        state.withLock { s in
            LedgerHeads(
                recordsSeq: Int64(s.records.count), recordsHash: s.records.last?.hash ?? LedgerRecord.genesisHash,
                eventsSeq: Int64(s.events.count), eventsHash: s.events.last?.hash ?? LedgerRecord.genesisHash)
        }
    }

    public func counts(
        throughRecordSeq recordSeq: Int64, throughEventSeq eventSeq: Int64
    ) async throws -> (
        records: Int64, events: Int64
    ) {
        state.withLock { s in
            (
                Int64(s.records.filter { $0.seq <= recordSeq }.count),
                Int64(s.events.filter { $0.seq <= eventSeq }.count)
            )
        }
    }

    public func event(seq: Int64) async throws -> LedgerEvent? {
        state.withLock { s in seq >= 1 && seq <= s.events.count ? s.events[Int(seq - 1)] : nil }
    }

    public func forEachEvent(
        kinds: Set<EventKind>?, afterSeq: Int64, _ body: (LedgerEvent) throws -> Void
    ) async throws {
        let selected = state.withLock { s in
            s.events.filter { $0.seq > afterSeq && (kinds?.contains($0.content.kind) ?? true) }
        }
        for e in selected { try body(e) }
    }

    public func records(cns: [String]) async throws -> [String: LedgerRecord] {
        state.withLock { s in
            var out: [String: LedgerRecord] = [:]
            for cn in cns { if let i = s.byCN[cn] { out[cn] = s.records[i] } }
            return out
        }
    }

    public func records(seqs: [Int64]) async throws -> [LedgerRecord] {
        state.withLock { s in
            Array(Set(seqs)).sorted().filter { $0 >= 1 && $0 <= s.records.count }.map { s.records[Int($0 - 1)] }
        }
    }

    public func record(seq: Int64) async throws -> LedgerRecord? {
        state.withLock { s in seq >= 1 && seq <= s.records.count ? s.records[Int(seq - 1)] : nil }
    }

    public func records(_ q: RecordQuery) async throws -> [LedgerRecord] {
        state.withLock { s in
            let out = s.records.filter(q.matches)
            return q.limit.map { Array(out.prefix($0)) } ?? out
        }
    }

    @discardableResult
    public func forEachRecord(
        _ q: RecordQuery, _ body: (LedgerRecord) throws -> Void
    ) async throws -> (
        seq: Int64, hash: String
    ) {
        let (selected, head) = state.withLock { s in
            let out = s.records.filter(q.matches)
            return (
                q.limit.map { Array(out.prefix($0)) } ?? out,
                (Int64(s.records.count), s.records.last?.hash ?? LedgerRecord.genesisHash)
            )
        }
        for r in selected { try body(r) }
        return head
    }

    public func forEachRecordState(_ q: RecordQuery, _ body: (Int64, RecordState) throws -> Void) async throws {
        try await forEachRecord(q) { try body($0.seq, $0.state) }
    }

    public func head() async throws -> (seq: Int64, hash: String) {
        state.withLock { s in (Int64(s.records.count), s.records.last?.hash ?? LedgerRecord.genesisHash) }
    }

    public func events(recordSeq: Int64?, limit: Int?) async throws -> [LedgerEvent] {
        state.withLock { s in
            let all = recordSeq.map { seq in s.events.filter { $0.content.recordSeq == seq } } ?? s.events
            return limit.map { Array(all.prefix($0)) } ?? all
        }
    }

    public func count() async throws -> Int { state.withLock { $0.records.count } }

    public func verify() async throws -> VerificationReport {
        state.withLock { s in
            var verifier = ChainVerifier()
            var kinds: [Int64: [EventKind]] = [:]
            for e in s.events {
                if let seq = e.content.recordSeq, [.issued, .delivered, .failed, .revoked].contains(e.content.kind) {
                    kinds[seq, default: []].append(e.content.kind)
                }
            }
            for r in s.records { verifier.add(record: r, stateEvents: kinds[r.seq] ?? []) }
            for e in s.events { verifier.add(event: e) }
            return verifier.report
        }
    }

    /// Test hook: replaces a stored record as an attacker with direct access would.
    public func tamper(_ body: (inout [LedgerRecord]) -> Void) {
        state.withLock { s in body(&s.records) }
    }
}
