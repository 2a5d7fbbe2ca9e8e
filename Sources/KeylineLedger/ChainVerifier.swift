import KeylineCore

/// Walks records and events in sequence order and finds the first place the chain breaks. Shared by every ledger
/// implementation so they judge integrity identically; it holds only the previous hash, so memory stays flat.
public struct ChainVerifier {
    public private(set) var report = VerificationReport()
    private var expectedRecordSeq: Int64 = 1
    private var prevRecordHash = LedgerRecord.genesisHash
    private var expectedEventSeq: Int64 = 1
    private var prevEventHash = LedgerRecord.genesisHash
    private static let maxProblems = 50

    public init() {}

    /// A problem found outside the rows themselves (such as a chain head that disagrees with the last row).
    public mutating func note(_ text: String) {
        problem(text)
    }

    private mutating func problem(_ text: String) {
        if report.problems.count < Self.maxProblems { report.problems.append(text) }
    }

    private mutating func badRecord(_ seq: Int64, _ text: String) {
        if report.firstBadRecordSeq == nil { report.firstBadRecordSeq = seq }
        problem("record seq \(seq): \(text)")
    }

    private mutating func badEvent(_ seq: Int64, _ text: String) {
        if report.firstBadEventSeq == nil { report.firstBadEventSeq = seq }
        problem("event seq \(seq): \(text)")
    }

    /// Feeds the next record (in ascending `seq` order) with the kinds of its state-changing events, in order.
    public mutating func add(record r: LedgerRecord, stateEvents: [EventKind]) {
        report.recordsChecked += 1
        if r.seq != expectedRecordSeq {
            if r.seq > expectedRecordSeq {
                badRecord(expectedRecordSeq, "missing (records \(expectedRecordSeq)–\(r.seq - 1) were deleted)")
            } else {
                badRecord(r.seq, "out of order or duplicated (expected \(expectedRecordSeq))")
            }
        }
        if r.prevHash != prevRecordHash {
            badRecord(r.seq, "does not link to the record before it (inserted, deleted or reordered)")
        }
        let computed = ChainHash.record(seq: r.seq, prevHash: r.prevHash, content: r.content)
        if computed != r.hash {
            badRecord(r.seq, "content does not match its hash (edited)")
        }
        if !stateEvents.contains(.issued) {
            badRecord(r.seq, "has no 'issued' event")
        }
        let expected = ChainHash.expectedState(after: stateEvents)
        if expected != r.state {
            badRecord(r.seq, "state '\(r.state.rawValue)' disagrees with its events (expected '\(expected.rawValue)')")
        }
        expectedRecordSeq = max(expectedRecordSeq, r.seq) + 1
        prevRecordHash = r.hash
        report.headHash = r.hash
        report.headSeq = r.seq
    }

    /// Feeds the next event (in ascending `seq` order).
    public mutating func add(event e: LedgerEvent) {
        report.eventsChecked += 1
        if e.seq != expectedEventSeq {
            if e.seq > expectedEventSeq {
                badEvent(expectedEventSeq, "missing (events \(expectedEventSeq)–\(e.seq - 1) were deleted)")
            } else {
                badEvent(e.seq, "out of order or duplicated (expected \(expectedEventSeq))")
            }
        }
        if e.prevHash != prevEventHash {
            badEvent(e.seq, "does not link to the event before it (inserted, deleted or reordered)")
        }
        if ChainHash.event(seq: e.seq, prevHash: e.prevHash, content: e.content) != e.hash {
            badEvent(e.seq, "content does not match its hash (edited)")
        }
        expectedEventSeq = max(expectedEventSeq, e.seq) + 1
        prevEventHash = e.hash
    }
}
