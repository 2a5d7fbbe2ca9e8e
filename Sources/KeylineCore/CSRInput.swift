import Foundation
import SwiftASN1
import X509

/// A device's CSR after decoding, with its key read independently of swift-crypto's parser.
public struct CSRInput: Sendable {
    /// The DER bytes of the CertificationRequest.
    public var der: [UInt8]
    /// The key algorithm read directly from the SPKI.
    public var keyAlgorithm: KeyAlgorithm
    /// The subject, read on its own so a refusal can name the CN even when the whole CSR cannot be parsed.
    public var subject: DistinguishedName?
    /// The signature algorithm OID of the request.
    public var signatureAlgorithmOID: ASN1ObjectIdentifier
    /// The fully parsed request, nil when swift-certificates cannot parse it (an RSA key below 2048 bits, an
    /// unknown curve); the key policy refuses those before anything needs the parsed form.
    public var parsed: CertificateSigningRequest?

    /// Decodes a CSR from PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or DER bytes.
    ///
    /// Throws ``KeylineError/Code/dataError`` with a one-line reason for garbage, truncated or trailing data.
    public init(bytes: [UInt8]) throws {
        let der: [UInt8]
        if let text = String(bytes: bytes, encoding: .utf8), text.contains("-----BEGIN") {
            der = try Self.pemBody(text)
        } else {
            der = bytes
        }
        guard !der.isEmpty else { throw KeylineError(.dataError, "input is empty, expected a CSR in PEM or DER") }
        let root: ASN1Node
        do {
            root = try DER.parse(der)
        } catch {
            throw KeylineError(.dataError, "not a DER-encoded CSR (truncated or garbage)")
        }
        guard case .constructed(let top) = root.content else {
            throw KeylineError(.dataError, "not a CSR: top-level element is not a SEQUENCE")
        }
        let parts = Array(top)
        guard parts.count == 3, case .constructed(let infoChildren) = parts[0].content else {
            throw KeylineError(.dataError, "not a CSR: expected CertificationRequest with 3 elements")
        }
        let info = Array(infoChildren)
        guard info.count >= 3 else { throw KeylineError(.dataError, "not a CSR: request info is truncated") }
        do {
            self.keyAlgorithm = try KeyAlgorithm(spki: info[2])
        } catch let error as KeylineError {
            throw error
        } catch {
            throw KeylineError(.dataError, "CSR public key is malformed")
        }
        guard case .constructed(let sigAlg) = parts[1].content, let sigOIDNode = sigAlg.first(where: { _ in true }),
            let sigOID = try? ASN1ObjectIdentifier(derEncoded: sigOIDNode)
        else { throw KeylineError(.dataError, "CSR signature algorithm is malformed") }
        self.signatureAlgorithmOID = sigOID
        self.subject = try? DistinguishedName(derEncoded: info[1])
        self.der = der
        self.parsed = try? CertificateSigningRequest(derEncoded: der)
    }

    /// The CN to name in an audit event: the subject's only CN, if it has exactly one.
    public var claimedCN: String? {
        subject.flatMap { try? IssuancePolicy.commonName(of: $0).get() }
    }

    static func pemBody(_ text: String) throws -> [UInt8] {
        let labels = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"]
        for label in labels {
            guard let begin = text.range(of: "-----BEGIN \(label)-----") else { continue }
            guard let end = text.range(of: "-----END \(label)-----", range: begin.upperBound..<text.endIndex) else {
                throw KeylineError(.dataError, "truncated PEM: no END \(label) line")
            }
            // Strip line breaks and blanks byte by byte (a Character filter cost 7% of a sign run).
            let body = text[begin.upperBound..<end.lowerBound].utf8.filter {
                $0 != 0x0A && $0 != 0x0D && $0 != 0x20 && $0 != 0x09
            }
            guard let data = Data(base64Encoded: Data(body)), !data.isEmpty else {
                throw KeylineError(.dataError, "PEM body is not valid base64")
            }
            return Array(data)
        }
        throw KeylineError(.dataError, "PEM holds no CERTIFICATE REQUEST block")
    }
}
