/// How a batch is cut into commits.
///
/// A batch is a pipeline: the next chunk's keys are staged while one chunk is signed and committed, and the chunk
/// before it has its files written. Nothing overlaps the staging of the first chunk or the files of the last one,
/// so large chunks at the ends leave cores idle. The plan therefore ramps: with chunks of 2,000 the first commits
/// hold 250, 500 and 1,000 certificates and the last ones 1,000, 500 and 250; the chunks between are as equal as
/// possible and none is larger than the chunk asked for.
public enum ChunkPlan {
    /// The smallest ramp step. Below it, a commit costs more per certificate than the idle time it saves.
    public static let smallestStep = 250

    /// Sizes that sum to `total`, in order; none is larger than `chunk`. Chunks of less than twice
    /// ``smallestStep`` are not ramped (every step would be smaller than the smallest).
    public static func sizes(total: Int, chunk: Int, smallest: Int = smallestStep) -> [Int] {
        precondition(chunk > 0 && total >= 0 && smallest > 0)
        guard total > 0 else { return [] }
        // The steps, smallest first: chunk/2, chunk/4, ... down to `smallest`.
        var steps: [Int] = []
        var step = chunk / 2
        while step >= smallest {
            steps.insert(step, at: 0)
            step /= 2
        }
        var head: [Int] = []
        var tail: [Int] = []
        var left = total
        for step in steps {
            // A step is taken at both ends, and only while something at least as large is left between them.
            guard left >= 3 * step else { break }
            head.append(step)
            tail.insert(step, at: 0)
            left -= 2 * step
        }
        let count = (left + chunk - 1) / chunk
        let middle = (0..<count).map { left / count + ($0 < left % count ? 1 : 0) }
        return head + middle + tail
    }
}
