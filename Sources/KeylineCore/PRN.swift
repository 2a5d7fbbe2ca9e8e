import Foundation

/// A backend resource name: `prn:1:<organization-uuid>:<type>:<uuid>`, or an organization's own `prn:1:<uuid>`.
public struct PRN: Sendable, Hashable, CustomStringConvertible {
    /// The organization the resource belongs to (lower-case UUID text).
    public var organization: String
    /// The resource type (`product`, `cohort`, `device`, ...); nil for an organization's own PRN.
    public var type: String?
    /// The resource's own UUID; nil for an organization's own PRN.
    public var id: String?

    public var description: String {
        guard let type, let id else { return "prn:1:\(organization)" }
        return "prn:1:\(organization):\(type):\(id)"
    }

    /// Parses `text`; the reason says what is wrong when it is not a PRN.
    public static func parse(_ text: String) -> Result<PRN, KeylineError> {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        func bad(_ why: String) -> Result<PRN, KeylineError> {
            .failure(
                KeylineError(
                    .configuration, "'\(text)' is not a PRN (\(why)); expected prn:1:<organization-uuid>:<type>:<uuid>")
            )
        }
        guard parts.count == 5 || parts.count == 3 else { return bad("\(parts.count) colon-separated parts") }
        guard parts[0] == "prn" else { return bad("it must start with 'prn'") }
        guard parts[1] == "1" else { return bad("version '\(parts[1])' is not 1") }
        guard isUUID(parts[2]) else { return bad("organization '\(parts[2])' is not a UUID") }
        if parts.count == 3 { return .success(PRN(organization: parts[2].lowercased(), type: nil, id: nil)) }
        guard !parts[3].isEmpty, parts[3].allSatisfy({ $0.isLetter || $0 == "_" }) else {
            return bad("type '\(parts[3])' is not a resource type")
        }
        guard isUUID(parts[4]) else { return bad("resource id '\(parts[4])' is not a UUID") }
        return .success(PRN(organization: parts[2].lowercased(), type: parts[3], id: parts[4].lowercased()))
    }

    /// Parses `text` and requires it to be of `type`.
    public static func parse(_ text: String, ofType type: String) -> Result<PRN, KeylineError> {
        switch parse(text) {
        case .failure(let e): return .failure(e)
        case .success(let prn):
            guard prn.type == type else {
                return .failure(
                    KeylineError(
                        .configuration, "'\(text)' is a PRN of type '\(prn.type ?? "organization")', not '\(type)'"))
            }
            return .success(prn)
        }
    }

    /// An RFC 4122 UUID in its 8-4-4-4-12 hex form.
    static func isUUID(_ s: String) -> Bool {
        let groups = s.split(separator: "-", omittingEmptySubsequences: false)
        guard groups.map(\.count) == [8, 4, 4, 4, 12] else { return false }
        return groups.allSatisfy { $0.allSatisfy(\.isHexDigit) }
    }
}
