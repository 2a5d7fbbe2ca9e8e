/// A CN template for batches: literal text with one `{seq}` or `{seq:0N}` placeholder (zero-padded to N digits).
public struct CNTemplate: Sendable, Equatable {
    public let prefix: String
    public let suffix: String
    public let width: Int

    /// Parses `text`; throws ``KeylineError/Code/usage`` unless it has exactly one `{seq}` placeholder.
    public init(_ text: String) throws {
        guard let open = text.range(of: "{seq"), let close = text.range(of: "}", range: open.upperBound..<text.endIndex)
        else {
            throw KeylineError(.usage, "CN template '\(text)' needs a {seq} or {seq:06} placeholder")
        }
        let spec = text[open.upperBound..<close.lowerBound]
        if spec.isEmpty {
            width = 0
        } else if spec.hasPrefix(":"), let w = Int(spec.dropFirst()), w >= 0, w <= 20 {
            width = w
        } else {
            throw KeylineError(.usage, "CN template placeholder '{seq\(spec)}' must be {seq} or {seq:0N}")
        }
        prefix = String(text[..<open.lowerBound])
        suffix = String(text[close.upperBound...])
        if suffix.contains("{seq") { throw KeylineError(.usage, "CN template '\(text)' has more than one {seq}") }
    }

    /// The CN for sequence number `seq`.
    public func render(_ seq: Int) -> String {
        let digits = String(seq)
        let padded = digits.count < width ? String(repeating: "0", count: width - digits.count) + digits : digits
        return prefix + padded + suffix
    }
}
