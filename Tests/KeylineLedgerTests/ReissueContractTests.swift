import Foundation
import Testing

@testable import KeylineCore
@testable import KeylineLedger

/// A second certificate for `r` (another serial, DER and fingerprint), carrying the re-issue link the ledger set.
func reissued(_ r: Reservation) -> RecordContent {
    var c = content(r, serial: "AB" + Hex.upper(Array(r.cn.utf8)))
    c.certificateDER = Array(("der-2:" + r.cn).utf8)
    c.certificateFingerprint = Hex.sha256(c.certificateDER)
    c.reissueOf = r.reissueOf
    return c
}

func revokeEvent(_ r: LedgerRecord, _ reason: String = "reason rework") -> EventContent {
    EventContent(
        kind: .revoked, recordSeq: r.seq, cn: r.content.cn, detail: reason, stationID: "station-test",
        operatorName: "qa", at: t0)
}

@Suite("Ledger contract: rework, re-issue, checkpoints' heads")
struct ReissueContractTests {
    @Test("revoked is final: any further state change is refused and changes nothing", arguments: Backend.allCases)
    func revokedIsFinal(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        let r = try await issue(ledger, "dev-1")
        let revoked = try await ledger.transition(recordSeq: r.seq, to: .revoked, event: revokeEvent(r))
        #expect(revoked.state == .revoked)
        let heads = try await ledger.heads()
        for next in RecordState.allCases {
            await #expect(throws: KeylineError(.dataError, "")) {
                try await ledger.transition(recordSeq: r.seq, to: next, event: revokeEvent(r))
            }
        }
        #expect(try await ledger.heads() == heads)
        #expect(try await ledger.verify().isIntact)
    }

    @Test(
        "a revoked CN is issued again only with reissue, which links to the revoked record", arguments: Backend.allCases
    )
    func reissue(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        let first = try await issue(ledger, "dev-1")
        // Not revoked: reissue is refused with its own rule.
        var request = reservation("dev-1", key: "key-2")
        request.reissue = true
        await #expect(throws: KeylineError.refused("reissue", "")) { try await ledger.issue(request, sign: reissued) }
        _ = try await ledger.transition(recordSeq: first.seq, to: .revoked, event: revokeEvent(first))
        // Revoked, but no reissue: still the unique-cn refusal.
        do {
            _ = try await ledger.issue(reservation("dev-1", key: "key-2"), sign: reissued)
            Issue.record("a revoked CN was issued again without reissue")
        } catch let e as KeylineError {
            #expect(e.rule == "unique-cn" && e.reason.contains("--reissue"))
        }
        let second = try await ledger.issue(request, sign: reissued)
        #expect(second.seq == 2 && second.content.reissueOf == first.seq)
        #expect(try await ledger.record(cn: "dev-1") == second)
        #expect(try await ledger.records(cns: ["dev-1"])["dev-1"] == second)
        #expect(try await ledger.history(cn: "dev-1").map(\.seq) == [1, 2])
        #expect(try await ledger.verify().isIntact)
        // The new certificate is current: a third needs another revocation.
        var third = reservation("dev-1", key: "key-3")
        third.reissue = true
        await #expect(throws: KeylineError.refused("reissue", "")) { try await ledger.issue(third, sign: reissued) }
    }

    @Test(
        "a large group (SQLite looks it up in bulk) judges a re-issue, a repeated CN and a revoked record's key as one by one",
        arguments: Backend.allCases)
    func largeGroupVerdicts(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        let old = try await issue(ledger, "old-1")
        let gone = try await issue(ledger, "gone-1", key: "gone-key")
        _ = try await ledger.transition(recordSeq: old.seq, to: .revoked, event: revokeEvent(old))
        _ = try await ledger.transition(recordSeq: gone.seq, to: .revoked, event: revokeEvent(gone))
        var group = (1...20).map { reservation("new-\($0)") }
        var again = reservation("old-1", key: "old-key-2")
        again.reissue = true
        group[3] = again
        group[7] = reservation("new-1", key: "other")  // the group's first CN again
        group[11] = reservation("new-12b", key: "gone-key")  // revoked, but its key stays taken
        let results = try await ledger.issueEach(group) { r in r.map { $0.reissue ? reissued($0) : content($0) } }
        let rules = results.enumerated().compactMap { i, result -> String? in
            if case .failure(let e) = result { return "\(i):\(e.rule ?? "")" }
            return nil
        }
        #expect(rules == ["7:unique-cn", "11:unique-public-key"])
        let reissuedRecord = try results[3].get()
        #expect(reissuedRecord.content.cn == "old-1" && reissuedRecord.content.reissueOf == old.seq)
        #expect(try await ledger.count() == 20)
        #expect(try await ledger.verify().isIntact)
    }

    @Test("reissue of a CN never issued is refused", arguments: Backend.allCases)
    func reissueUnknown(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        var request = reservation("ghost")
        request.reissue = true
        await #expect(throws: KeylineError.refused("reissue", "")) { try await ledger.issue(request, sign: reissued) }
        #expect(try await ledger.count() == 0)
        #expect(try await ledger.events(recordSeq: nil, limit: nil).map(\.content.kind) == [.refused])
    }

    @Test("signed content must carry the reissue link the ledger reserved", arguments: Backend.allCases)
    func reissueLinkChecked(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        let first = try await issue(ledger, "dev-1")
        _ = try await ledger.transition(recordSeq: first.seq, to: .revoked, event: revokeEvent(first))
        var request = reservation("dev-1", key: "key-2")
        request.reissue = true
        await #expect(throws: KeylineError(.internalError, "")) {
            try await ledger.issue(request) { r in
                var c = reissued(r)
                c.reissueOf = nil
                return c
            }
        }
        #expect(try await ledger.count() == 1)
    }

    @Test("the reissue link is part of the record's hash; records without it hash as before")
    func reissueHashed() {
        let c = content(reservation("dev-1"))
        var linked = c
        linked.reissueOf = 7
        let plain = ChainHash.record(seq: 8, prevHash: LedgerRecord.genesisHash, content: c)
        #expect(ChainHash.record(seq: 8, prevHash: LedgerRecord.genesisHash, content: linked) != plain)
        linked.reissueOf = 6
        #expect(
            ChainHash.record(seq: 8, prevHash: LedgerRecord.genesisHash, content: linked)
                != ChainHash.record(
                    seq: 8, prevHash: LedgerRecord.genesisHash,
                    content: {
                        var l = c; l.reissueOf = 7; return l
                    }()))
        // A first issuance's hash does not depend on the new field at all (older ledgers keep verifying).
        #expect(plain == ChainHash.record(seq: 8, prevHash: LedgerRecord.genesisHash, content: c))
    }

    @Test("heads, single events and streamed events by kind", arguments: Backend.allCases)
    func heads(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        #expect(
            try await ledger.heads()
                == LedgerHeads(
                    recordsSeq: 0, recordsHash: LedgerRecord.genesisHash, eventsSeq: 0,
                    eventsHash: LedgerRecord.genesisHash))
        let a = try await issue(ledger, "dev-1")
        _ = try await issue(ledger, "dev-2")
        _ = try await ledger.transition(recordSeq: a.seq, to: .revoked, event: revokeEvent(a, "reason scrap"))
        let heads = try await ledger.heads()
        let events = try await ledger.events(recordSeq: nil, limit: nil)
        #expect(heads.recordsSeq == 2 && heads.eventsSeq == 3 && heads.eventsHash == events.last?.hash)
        #expect(try await ledger.event(seq: 2) == events[1])
        #expect(try await ledger.event(seq: 4) == nil)
        var revoked: [LedgerEvent] = []
        try await ledger.forEachEvent(kinds: [.revoked], afterSeq: 0) { revoked.append($0) }
        #expect(revoked.map(\.content.detail) == ["reason scrap"])
        #expect(try await ledger.records(seqs: [2, 9, 1, 2]).map(\.seq) == [1, 2])
        let counts = try await ledger.counts(throughRecordSeq: 1, throughEventSeq: 99)
        #expect(counts.records == 1 && counts.events == 3)
        var after: [Int64] = []
        try await ledger.forEachEvent(kinds: nil, afterSeq: 1) { after.append($0.seq) }
        #expect(after == [2, 3])
    }

    @Test("queries by serial, fingerprint, CA and time range", arguments: Backend.allCases)
    func moreQueries(_ backend: Backend) async throws {
        let ledger = try await backend.make()
        let a = try await issue(ledger, "a-1")
        let b = try await ledger.issue(reservation("b-1")) { content($0, at: t0.addingTimeInterval(3600)) }
        #expect(try await ledger.records(RecordQuery(serialHex: b.content.serialHex)).map(\.seq) == [b.seq])
        #expect(
            try await ledger.records(RecordQuery(fingerprint: a.content.certificateFingerprint)).map(\.seq) == [a.seq])
        #expect(try await ledger.records(RecordQuery(caName: "dev")).count == 2)
        #expect(try await ledger.records(RecordQuery(caName: "other")).isEmpty)
        #expect(try await ledger.records(RecordQuery(createdBefore: t0.addingTimeInterval(1))).map(\.seq) == [a.seq])
        #expect(
            try await ledger.records(
                RecordQuery(createdSince: t0.addingTimeInterval(1), createdBefore: t0.addingTimeInterval(7200))
            )
            .map(\.seq) == [b.seq])
    }
}
