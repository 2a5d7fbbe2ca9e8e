import KeylineStation
import Testing

@Suite struct ChunkPlanTests {
    @Test func aLargeBatchRampsUpAndDown() {
        let sizes = ChunkPlan.sizes(total: 20_000, chunk: 2000)
        #expect(sizes.prefix(3) == [250, 500, 1000])
        #expect(sizes.suffix(3) == [1000, 500, 250])
        #expect(sizes.reduce(0, +) == 20_000)
        // The 16,500 between the ramps: 9 chunks, as equal as possible, none above 2,000.
        let middle = Array(sizes.dropFirst(3).dropLast(3))
        #expect(middle.count == 9)
        #expect(middle.allSatisfy { $0 == 1833 || $0 == 1834 })
    }

    @Test func smallChunksAreNotRamped() {
        #expect(ChunkPlan.sizes(total: 600, chunk: 50) == Array(repeating: 50, count: 12))
        #expect(ChunkPlan.sizes(total: 130, chunk: 50) == [44, 43, 43])
        #expect(ChunkPlan.sizes(total: 1000, chunk: 499) == [334, 333, 333])
    }

    @Test func aShortBatchTakesOnlyTheStepsItCanFill() {
        // 1,200 with chunks of 2,000: 250 at each end (700 left between them, at least 3 x 250), not 500.
        #expect(ChunkPlan.sizes(total: 1200, chunk: 2000) == [250, 700, 250])
        #expect(ChunkPlan.sizes(total: 700, chunk: 2000) == [700])
        #expect(ChunkPlan.sizes(total: 1, chunk: 2000) == [1])
        #expect(ChunkPlan.sizes(total: 0, chunk: 2000) == [])
    }

    @Test func everyPlanSumsToItsTotalAndNoChunkIsTooLarge() {
        for chunk in [1, 7, 250, 499, 500, 1000, 2000, 5000, 10_000] {
            for total in [1, 2, 249, 250, 751, 1000, 3499, 3500, 3501, 9999, 20_000, 123_457] {
                let sizes = ChunkPlan.sizes(total: total, chunk: chunk)
                #expect(sizes.reduce(0, +) == total, "total \(total), chunk \(chunk)")
                #expect(sizes.allSatisfy { $0 > 0 && $0 <= chunk }, "total \(total), chunk \(chunk): \(sizes)")
            }
        }
    }
}
