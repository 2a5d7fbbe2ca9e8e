import SwiftASN1

/// A public key's algorithm and size, read from its SubjectPublicKeyInfo without trusting any library to accept it.
///
/// swift-crypto refuses RSA keys below 2048 bits at parse time, so a CSR carrying one would otherwise fail as
/// "unparsable"; reading the SPKI ourselves lets the key policy refuse it by name and size.
public enum KeyAlgorithm: Hashable, Sendable, CustomStringConvertible {
    case ecP256
    case ecP384
    case ecOther(curve: String)
    case rsa(bits: Int)
    case other(oid: String)

    public var description: String {
        switch self {
        case .ecP256: "ECDSA P-256"
        case .ecP384: "ECDSA P-384"
        case .ecOther(let curve): "EC curve \(curve)"
        case .rsa(let bits): "RSA-\(bits)"
        case .other(let oid): "key algorithm \(oid)"
        }
    }

    static let ecPublicKey: ASN1ObjectIdentifier = [1, 2, 840, 10045, 2, 1]
    static let rsaEncryption: ASN1ObjectIdentifier = [1, 2, 840, 113549, 1, 1, 1]
    static let p256: ASN1ObjectIdentifier = [1, 2, 840, 10045, 3, 1, 7]
    static let p384: ASN1ObjectIdentifier = [1, 3, 132, 0, 34]

    /// Reads the algorithm from DER-encoded SubjectPublicKeyInfo.
    public init(spki node: ASN1Node) throws {
        guard case .constructed(let children) = node.content else {
            throw KeylineError(.dataError, "public key info is not a SEQUENCE")
        }
        var it = children.makeIterator()
        guard let algNode = it.next(), let keyNode = it.next(), case .constructed(let algChildren) = algNode.content
        else { throw KeylineError(.dataError, "public key info is truncated") }
        var algIt = algChildren.makeIterator()
        guard let oidNode = algIt.next() else { throw KeylineError(.dataError, "public key algorithm is missing") }
        let oid = try ASN1ObjectIdentifier(derEncoded: oidNode)
        switch oid {
        case Self.ecPublicKey:
            guard let paramNode = algIt.next(), let curve = try? ASN1ObjectIdentifier(derEncoded: paramNode) else {
                self = .ecOther(curve: "explicit parameters")
                return
            }
            switch curve {
            case Self.p256: self = .ecP256
            case Self.p384: self = .ecP384
            default: self = .ecOther(curve: curve.description)
            }
        case Self.rsaEncryption:
            let bits = try ASN1BitString(derEncoded: keyNode)
            let rsaKey = try DER.parse(bits.bytes)
            guard case .constructed(let parts) = rsaKey.content, let modNode = parts.first(where: { _ in true }),
                case .primitive(let modulus) = modNode.content
            else { throw KeylineError(.dataError, "RSA public key is malformed") }
            let trimmed = modulus.drop(while: { $0 == 0 })
            let leadingBits = trimmed.first.map { 8 - $0.leadingZeroBitCount } ?? 0
            self = .rsa(bits: max(0, (trimmed.count - 1) * 8 + leadingBits))
        default:
            self = .other(oid: oid.description)
        }
    }
}

/// The public keys a profile may allow, as named in `key_types`. An `rsaN` entry admits RSA keys of N bits or more.
public enum AllowedKeyType: String, Sendable, CaseIterable, Codable {
    case p256
    case p384
    case rsa2048
    case rsa3072
    case rsa4096

    /// The smallest RSA modulus this entry admits, nil for EC entries.
    public var rsaMinimumBits: Int? {
        switch self {
        case .p256, .p384: nil
        case .rsa2048: 2048
        case .rsa3072: 3072
        case .rsa4096: 4096
        }
    }
}
