import Crypto
import Foundation
import SwiftASN1
import X509
import _CryptoExtras

@testable import KeylineCore

/// Test fixtures: CAs, keys and CSRs made in memory with a fixed clock.
enum TestPKI {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)  // 2027-01-15

    static func randomSerial() throws -> Certificate.SerialNumber {
        try CertificateFactory.serial(fromRandom: (0..<20).map { _ in UInt8.random(in: 0...255) })
    }

    /// A root and an issuing CA (P-256 unless `issuingKey` says otherwise).
    static func ca(
        name: String = "test",
        notBefore: Date = now.addingTimeInterval(-86400),
        notAfter: Date = now.addingTimeInterval(5 * 365 * 86400),
        issuingKey: Certificate.PrivateKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
    ) throws -> (ca: IssuingCA, key: Certificate.PrivateKey) {
        let rootKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let root = try CertificateFactory.caCertificate(
            subject: try DistinguishedName { CommonName("Test Root") }, publicKey: rootKey.publicKey, pathLength: nil,
            notBefore: notBefore, notAfter: notAfter.addingTimeInterval(86400), serial: try randomSerial(), issuer: nil,
            selfKey: rootKey)
        let issuing = try CertificateFactory.caCertificate(
            subject: try DistinguishedName { CommonName("Test Issuing CA") }, publicKey: issuingKey.publicKey,
            pathLength: 0,
            notBefore: notBefore, notAfter: notAfter, serial: try randomSerial(), issuer: (root, rootKey),
            selfKey: issuingKey)
        return (try IssuingCA(name: name, certificate: issuing, chain: [root]), issuingKey)
    }

    /// A DER CSR for `subject` signed by `key`.
    static func csr(
        subject: DistinguishedName, key: Certificate.PrivateKey,
        attributes: CertificateSigningRequest.Attributes = .init()
    ) throws -> [UInt8] {
        let csr = try CertificateSigningRequest(version: .v1, subject: subject, privateKey: key, attributes: attributes)
        var s = DER.Serializer()
        try s.serialize(csr)
        return s.serializedBytes
    }

    static func csr(
        cn: String, key: Certificate.PrivateKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
    ) throws -> [UInt8] {
        try csr(subject: try DistinguishedName { CommonName(cn) }, key: key)
    }

    static func pem(_ der: [UInt8], label: String = "CERTIFICATE REQUEST") -> [UInt8] {
        Array(PEMDocument(type: label, derBytes: der).pemString.utf8)
    }
}
