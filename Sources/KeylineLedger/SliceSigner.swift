import Foundation
import KeylineCore

/// Signs a transaction's accepted reservations while the writer inserts them.
///
/// A ledger writes its records on one thread (SQLite has one writer), and signing a group took as long as inserting
/// it, so a chunk of `keyline issue` kept a second core idle for half its transaction. Here a large group is signed
/// in slices on a thread of its own, slice after slice, while the writer inserts the slices already signed. Every
/// reservation was checked before the first slice is signed, as before; `signAll` is called once per slice, in
/// order, never two calls at once, and every call has returned before ``signing(_:_:_:)`` does.
enum SliceSigner {
    /// Groups smaller than this are signed in one call on the writer's thread (a device on the line, a small
    /// `sign` group): a thread of its own would cost more than it overlaps.
    static let minimumToOverlap = 64
    /// Slices per group: small enough that the writer waits only for the first, large enough that each call still
    /// signs on every core.
    static let slicesPerGroup = 8

    /// Runs `body` with `next`, which returns the contents of `accepted` one by one in order (signing them through
    /// `signAll`). Throws what `signAll` or `body` throws; `signAll` returning the wrong number of contents is an
    /// internal error. `body` must take every content (the count is checked when it returns).
    static func signing<T>(
        _ accepted: [Reservation], _ signAll: ([Reservation]) throws -> [RecordContent],
        _ body: (_ next: () throws -> RecordContent) throws -> T
    ) throws -> T {
        guard accepted.count >= minimumToOverlap else {
            let contents = accepted.isEmpty ? [] : try signAll(accepted)
            guard contents.count == accepted.count else { throw miscount(contents.count, accepted.count) }
            var iterator = contents.makeIterator()
            var taken = 0
            let result = try body {
                guard let content = iterator.next() else { throw miscount(accepted.count + 1, accepted.count) }
                taken += 1
                return content
            }
            guard taken == accepted.count else { throw miscount(taken, accepted.count) }
            return result
        }
        return try withoutActuallyEscaping(signAll) { signAll in
            let producer = Producer(accepted, slices: slicesPerGroup, signAll: signAll)
            // However `body` ends, the producer is stopped and joined before `signAll` goes out of scope.
            defer { producer.stopAndJoin() }
            producer.start()
            var slice: [RecordContent] = []
            var sliceIndex = -1
            var position = 0
            var taken = 0
            let result = try body {
                while position == slice.count {
                    sliceIndex += 1
                    slice = try producer.slice(sliceIndex)
                    position = 0
                }
                position += 1
                taken += 1
                return slice[position - 1]
            }
            guard taken == accepted.count else { throw miscount(taken, accepted.count) }
            return result
        }
    }

    static func miscount(_ got: Int, _ expected: Int) -> KeylineError {
        KeylineError(.internalError, "signed \(got) of \(expected) reservations")
    }

    /// The signing thread and what it has made so far.
    private final class Producer: @unchecked Sendable {
        // `signAll` is called only on the producer's thread, one call at a time, and `stopAndJoin` waits for the
        // last call to return and then lets go of it: the closure never runs concurrently with itself or outlives
        // `signing` (the thread object itself may live a moment longer, so it must not hold the closure).
        private var signAll: (([Reservation]) throws -> [RecordContent])?
        private let ranges: [Range<Int>]
        private let accepted: [Reservation]
        private let condition = NSCondition()
        private var done: [[RecordContent]] = []
        private var failure: Error?
        private var finished = false
        private var stopped = false

        init(_ accepted: [Reservation], slices: Int, signAll: @escaping ([Reservation]) throws -> [RecordContent]) {
            self.accepted = accepted
            self.signAll = signAll
            let size = (accepted.count + slices - 1) / slices
            ranges = stride(from: 0, to: accepted.count, by: size).map { $0..<min($0 + size, accepted.count) }
        }

        func start() {
            let thread = Thread { [self] in run() }
            // Certificates are built with deep call stacks; give the thread the main thread's size.
            thread.stackSize = 8 << 20
            thread.start()
        }

        private func run() {
            for range in ranges {
                condition.lock()
                let sign = stopped ? nil : signAll
                condition.unlock()
                guard let sign else { break }
                let result = Result { try sign(Array(accepted[range])) }
                condition.lock()
                switch result {
                case .success(let contents) where contents.count == range.count: done.append(contents)
                case .success(let contents): failure = SliceSigner.miscount(contents.count, range.count)
                case .failure(let error): failure = error
                }
                let failed = failure != nil
                condition.broadcast()
                condition.unlock()
                if failed { break }
            }
            condition.lock()
            finished = true
            condition.broadcast()
            condition.unlock()
        }

        /// The contents of slice `index`, waiting for it; throws the signing error instead once there is one.
        func slice(_ index: Int) throws -> [RecordContent] {
            condition.lock()
            defer { condition.unlock() }
            // Once a slice failed, the transaction will roll back: the writer stops at once.
            if let failure { throw failure }
            while done.count <= index {
                if let failure { throw failure }
                if finished || index >= ranges.count { throw SliceSigner.miscount(accepted.count + 1, accepted.count) }
                condition.wait()
            }
            return done[index]
        }

        func stopAndJoin() {
            condition.lock()
            stopped = true
            while !finished { condition.wait() }
            signAll = nil
            condition.unlock()
        }
    }
}
