import Foundation
import Testing

@testable import KeylineCore
@testable import KeylineLedger

/// Records how `signAll` is called: which CNs, how many calls at once, and whether any runs after `signing` returned.
private final class CallLog: @unchecked Sendable {
    private let lock = NSLock()
    private var inFlight = 0
    private(set) var maxInFlight = 0
    private(set) var calls: [[String]] = []

    func sign(_ r: [Reservation], failOn: String? = nil, delay: useconds_t = 0) throws -> [RecordContent] {
        lock.withLock {
            inFlight += 1
            maxInFlight = max(maxInFlight, inFlight)
            calls.append(r.map(\.cn))
        }
        defer { lock.withLock { inFlight -= 1 } }
        if delay > 0 { usleep(delay) }
        if let failOn, r.contains(where: { $0.cn == failOn }) { throw Failed(cn: failOn) }
        return r.map { content($0) }
    }

    var snapshot: (calls: Int, inFlight: Int) { lock.withLock { (calls.count, inFlight) } }
}

private struct Failed: Error, Equatable { let cn: String }

@Suite("Signing slices while the writer inserts")
struct SliceSignerTests {
    let group = (1...200).map { reservation(String(format: "dev-%03d", $0)) }

    @Test("a large group is signed in consecutive slices, one call at a time, and taken back in order")
    func slices() throws {
        let log = CallLog()
        let taken = try SliceSigner.signing(group, { try log.sign($0) }) { next in
            try group.map { _ in try next().cn }
        }
        #expect(taken == group.map(\.cn))
        #expect(log.calls.count == SliceSigner.slicesPerGroup)
        #expect(log.calls.flatMap { $0 } == group.map(\.cn), "every reservation signed once, in order")
        #expect(log.maxInFlight == 1)
        #expect(log.snapshot.inFlight == 0)
    }

    @Test("a small group is signed in one call")
    func small() throws {
        let log = CallLog()
        let few = Array(group.prefix(SliceSigner.minimumToOverlap - 1))
        let taken = try SliceSigner.signing(few, { try log.sign($0) }) { next in try few.map { _ in try next().cn } }
        #expect(taken == few.map(\.cn))
        #expect(log.calls == [few.map(\.cn)])
    }

    @Test("a slice that fails to sign fails the group, and nothing is signed after it")
    func signingFails() throws {
        let log = CallLog()
        #expect(throws: Failed(cn: "dev-100")) {
            try SliceSigner.signing(group, { try log.sign($0, failOn: "dev-100") }) { next in
                for _ in group { _ = try next() }
            }
        }
        let after = log.snapshot
        #expect(after.inFlight == 0, "signing returned while a slice was being signed")
        #expect(log.calls.last?.contains("dev-100") == true, "the failing slice is the last one signed")
        usleep(50_000)
        #expect(log.snapshot.calls == after.calls)
    }

    @Test("when the writer fails early, signing stops and no slice is signed after the group returns")
    func writerFails() throws {
        let log = CallLog()
        #expect(throws: Failed(cn: "writer")) {
            try SliceSigner.signing(group, { try log.sign($0, delay: 5_000) }) { next in
                _ = try next()
                throw Failed(cn: "writer")
            }
        }
        let after = log.snapshot
        #expect(after.inFlight == 0)
        #expect(after.calls < SliceSigner.slicesPerGroup, "the producer should stop instead of signing every slice")
        usleep(50_000)
        #expect(log.snapshot.calls == after.calls)
    }

    @Test("a signer that returns the wrong number of contents is an internal error")
    func miscount() {
        #expect(throws: KeylineError(.internalError, "")) {
            try SliceSigner.signing(group, { r in Array(r.dropLast().map { content($0) }) }) { next in
                for _ in group { _ = try next() }
            }
        }
        #expect(throws: KeylineError(.internalError, "")) {
            try SliceSigner.signing(Array(group.prefix(3)), { r in Array(r.dropLast().map { content($0) }) }) { _ in }
        }
    }

    @Test("a writer that does not take every content is an internal error")
    func untaken() {
        #expect(throws: KeylineError(.internalError, "")) {
            try SliceSigner.signing(group, { r in r.map { content($0) } }) { next in _ = try next() }
        }
    }
}
