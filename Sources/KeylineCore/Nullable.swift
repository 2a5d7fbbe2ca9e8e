/// Encodes `nil` as JSON `null` instead of leaving the key out, so every record has the same keys.
@propertyWrapper
public struct Nullable<T: Encodable>: Encodable {
    public var wrappedValue: T?

    public init(wrappedValue: T?) { self.wrappedValue = wrappedValue }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        if let wrappedValue { try c.encode(wrappedValue) } else { try c.encodeNil() }
    }
}

extension Nullable: Sendable where T: Sendable {}
