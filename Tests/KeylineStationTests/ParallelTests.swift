import Testing

@testable import KeylineStation

@Suite("Parallel map")
struct ParallelTests {
    @Test("keeps index order for any count")
    func order() throws {
        for n in [0, 1, 2, 7, 500] {
            #expect(try Parallel.map(n) { $0 * 3 } == (0..<n).map { $0 * 3 })
        }
    }

    @Test("rethrows the first error by index")
    func errors() {
        struct Failed: Error, Equatable { let i: Int }
        #expect(throws: Failed(i: 3)) {
            try Parallel.map(50) { i -> Int in
                if i == 3 || i == 40 { throw Failed(i: i) }
                return i
            }
        }
    }
}
