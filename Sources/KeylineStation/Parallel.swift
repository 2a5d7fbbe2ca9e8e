import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Runs independent CPU-bound work on every core the process has.
public enum Parallel {
    /// `body(0..<count)` in parallel, results in index order; rethrows the first error by index.
    public static func map<T: Sendable>(_ count: Int, _ body: @Sendable (Int) throws -> T) throws -> [T] {
        if count <= 1 { return try (0..<count).map(body) }
        var results = [Result<T, Error>?](repeating: nil, count: count)
        results.withUnsafeMutableBufferPointer { slots in
            // Each iteration writes only its own slot, so sharing the buffer across threads is safe.
            let shared = Slots(base: slots)
            DispatchQueue.concurrentPerform(iterations: count) { i in
                shared.base[i] = Result { try body(i) }
            }
        }
        return try results.map { try $0!.get() }
    }

    /// Starts blocking work (CPU, files) on a dispatch thread, off Swift's cooperative pool, and returns at once;
    /// await the task's value for its result.
    public static func start<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> Task<T, Error> {
        Task {
            try await withCheckedThrowingContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
            }
        }
    }

    /// Like ``start(_:)``, on a thread of its own at a lower scheduling priority (nice 10): work that may run
    /// behind the critical path (the next chunk's keys, the last chunk's files) takes the cores the critical path
    /// leaves idle instead of slowing it.
    public static func startBehind<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> Task<T, Error> {
        Task {
            try await withCheckedThrowingContinuation { continuation in
                let thread = Thread {
                    #if os(Linux)
                        // On Linux the nice value belongs to the thread, and `who` 0 is the calling one. Nice 10
                        // weighs about a tenth of a normal thread, so the work still moves when other processes
                        // keep every core busy (SCHED_IDLE would all but stop it then).
                        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
                    #endif
                    continuation.resume(with: Result { try body() })
                }
                thread.stackSize = 8 << 20
                thread.start()
            }
        }
    }

    private struct Slots<T>: @unchecked Sendable {
        let base: UnsafeMutableBufferPointer<Result<T, Error>?>
    }
}
