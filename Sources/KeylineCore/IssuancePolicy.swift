import SwiftASN1
import X509

/// The outcome of one policy rule: accept, or refuse naming the rule and the reason.
///
/// Rules return verdicts rather than throwing (swift-certificates' `VerifierPolicy` shape), so they compose and a
/// refusal always says which rule refused.
public enum PolicyVerdict: Sendable, Equatable {
    case accept
    case refuse(rule: String, reason: String)

    /// The verdict as a thrown ``KeylineError`` (policy refusal), or nothing when accepted.
    public func enforce() throws {
        if case .refuse(let rule, let reason) = self { throw KeylineError.refused(rule, reason) }
    }
}

/// The CN rule of one profile, with its pattern compiled once.
public struct CNRule: @unchecked Sendable {
    /// The longest CN the backend accepts.
    public static let maxLength = 64
    public let pattern: String
    private let regex: Regex<AnyRegexOutput>

    /// Compiles `pattern`; throws ``KeylineError/Code/configuration`` when it is not a valid regular expression.
    public init(pattern: String) throws {
        self.pattern = pattern
        do {
            self.regex = try Regex(pattern)
        } catch {
            throw KeylineError(.configuration, "cn_pattern '\(pattern)' is not a valid regular expression")
        }
    }

    /// Checks a CN against the hard rules (1–64 characters; no control characters, `/`, `*` or spaces) and then the
    /// profile's pattern.
    public func check(_ cn: String) -> PolicyVerdict {
        if cn.isEmpty { return .refuse(rule: "cn", reason: "CN is empty") }
        if cn.count > Self.maxLength {
            return .refuse(rule: "cn", reason: "CN has \(cn.count) characters, at most \(Self.maxLength) allowed")
        }
        for scalar in cn.unicodeScalars {
            if scalar.properties.generalCategory == .control || scalar.value == 0x7F {
                return .refuse(
                    rule: "cn",
                    reason: "CN contains a control character (U+\(String(scalar.value, radix: 16, uppercase: true)))")
            }
            if scalar == "/" { return .refuse(rule: "cn", reason: "CN contains '/'") }
            if scalar == "*" { return .refuse(rule: "cn", reason: "CN contains '*'") }
            if scalar.properties.isWhitespace { return .refuse(rule: "cn", reason: "CN contains white space") }
        }
        guard (try? regex.wholeMatch(in: cn)) != nil else {
            return .refuse(rule: "cn-pattern", reason: "CN '\(cn)' does not match the profile's cn_pattern \(pattern)")
        }
        return .accept
    }

    /// The verdicts on the CNs of `cns` that this rule refuses, by index; empty when every one passes.
    public func refusals(_ cns: [String]) -> [Int: PolicyVerdict] {
        var out: [Int: PolicyVerdict] = [:]
        for (i, cn) in cns.enumerated() {
            let verdict = check(cn)
            if verdict != .accept { out[i] = verdict }
        }
        return out
    }
}

/// The issuance policy of one profile: every check a CSR must pass before anything is signed.
public struct IssuancePolicy: Sendable {
    public let profile: Profile
    public let cnRule: CNRule

    public init(profile: Profile) throws {
        self.profile = profile
        self.cnRule = try CNRule(pattern: profile.cnPattern)
    }

    /// Signature algorithms accepted on a CSR (proof of possession); SHA-1, MD5 and unknown ones are refused.
    static let acceptedSignatureAlgorithms: [ASN1ObjectIdentifier: String] = [
        [1, 2, 840, 10045, 4, 3, 2]: "ecdsa-with-SHA256",
        [1, 2, 840, 10045, 4, 3, 3]: "ecdsa-with-SHA384",
        [1, 2, 840, 10045, 4, 3, 4]: "ecdsa-with-SHA512",
        [1, 2, 840, 113549, 1, 1, 11]: "sha256WithRSAEncryption",
        [1, 2, 840, 113549, 1, 1, 12]: "sha384WithRSAEncryption",
        [1, 2, 840, 113549, 1, 1, 13]: "sha512WithRSAEncryption",
    ]
    static let knownWeak: [ASN1ObjectIdentifier: String] = [
        [1, 2, 840, 10045, 4, 1]: "ecdsa-with-SHA1",
        [1, 2, 840, 113549, 1, 1, 5]: "sha1WithRSAEncryption",
        [1, 2, 840, 113549, 1, 1, 4]: "md5WithRSAEncryption",
        [1, 2, 840, 113549, 1, 1, 2]: "md2WithRSAEncryption",
        [1, 2, 840, 10040, 4, 3]: "dsa-with-SHA1",
    ]

    /// The key rule: P-256 always (when listed), P-384 and RSA only when the profile allows them.
    public func checkKey(_ key: KeyAlgorithm) -> PolicyVerdict {
        let allowed: Bool
        switch key {
        case .ecP256: allowed = profile.keyTypes.contains(.p256)
        case .ecP384: allowed = profile.keyTypes.contains(.p384)
        case .rsa(let bits): allowed = profile.rsaMinimumBits.map { bits >= $0 } ?? false
        case .ecOther, .other: allowed = false
        }
        if allowed { return .accept }
        let list = profile.keyTypes.map(\.rawValue).sorted()
        return .refuse(
            rule: "key-type",
            reason: "\(key) is not allowed by profile '\(profile.name)' (allowed: \(list.joined(separator: ", ")))"
        )
    }

    /// Checks a decoded CSR: key type, signature algorithm, proof of possession, then the CN.
    ///
    /// Returns the CN to issue and the CSR's public key when every rule accepts. Nothing else is taken from the CSR:
    /// other subject attributes and requested extensions are ignored.
    public func evaluate(_ csr: CSRInput) -> Result<(cn: String, publicKey: Certificate.PublicKey), KeylineError> {
        if case .refuse(let rule, let reason) = checkKey(csr.keyAlgorithm) {
            return .failure(.refused(rule, reason))
        }
        let oid = csr.signatureAlgorithmOID
        if acceptedName(oid) == nil {
            let name = Self.knownWeak[oid] ?? oid.description
            return .failure(.refused("signature-algorithm", "CSR is signed with \(name); SHA-256 or stronger required"))
        }
        guard let parsed = csr.parsed else {
            return .failure(KeylineError(.dataError, "CSR could not be parsed (malformed structure or attributes)"))
        }
        guard parsed.publicKey.isValidSignature(parsed.signature, for: parsed) else {
            return .failure(.refused("proof-of-possession", "the CSR's signature does not verify with its own key"))
        }
        let cn: String
        switch Self.commonName(of: parsed.subject) {
        case .success(let value): cn = value
        case .failure(let error): return .failure(error)
        }
        if case .refuse(let rule, let reason) = cnRule.check(cn) {
            return .failure(.refused(rule, reason))
        }
        return .success((cn, parsed.publicKey))
    }

    private func acceptedName(_ oid: ASN1ObjectIdentifier) -> String? { Self.acceptedSignatureAlgorithms[oid] }

    /// The single CN of a subject; refuses none, several, or a value that is not a string.
    public static func commonName(of subject: DistinguishedName) -> Result<String, KeylineError> {
        var found: [RelativeDistinguishedName.Attribute] = []
        for rdn in subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                found.append(attribute)
            }
        }
        guard !found.isEmpty else { return .failure(.refused("cn", "the CSR subject has no CN")) }
        guard found.count == 1 else {
            return .failure(.refused("cn", "the CSR subject has \(found.count) CNs, exactly one required"))
        }
        guard let value = String(found[0].value) else {
            return .failure(.refused("cn", "the CSR's CN is not a string"))
        }
        return .success(value)
    }
}
