import Crypto
import Foundation
import SwiftASN1
import Testing
import X509
import _CryptoExtras

@testable import KeylineCore

@Suite("Certificate factory")
struct CertificateFactoryTests {
    let profile = Profile(name: "default", caName: "test", validityDays: 3650, minValidityDays: 365)

    func leaf(
        ca: (ca: IssuingCA, key: Certificate.PrivateKey), profile: Profile? = nil, now: Date = TestPKI.now,
        key: Certificate.PrivateKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
    ) throws -> Certificate {
        let p = profile ?? self.profile
        let v = try CertificateFactory.leafValidity(
            now: now, validityDays: p.validityDays, minValidityDays: p.minValidityDays, ca: ca.ca.certificate
        ).get()
        return try CertificateFactory.leaf(
            cn: "dev-0001", publicKey: key.publicKey, profile: p, ca: ca.ca, signer: ca.key,
            serial: try TestPKI.randomSerial(),
            notBefore: v.notBefore, notAfter: v.notAfter)
    }

    @Test("serials are positive, at most 20 octets, from the random bytes given")
    func serials() throws {
        for first in [UInt8(0xFF), 0x80, 0x7F, 0x00] {
            let bytes = [first] + [UInt8](repeating: 0xAB, count: 19)
            let serial = try CertificateFactory.serial(fromRandom: bytes)
            // swift-certificates keeps the unsigned magnitude; DER adds a 0x00 octet when its top bit is set.
            let b = Array(serial.bytes)
            let derOctets = b.count + (b[0] & 0x80 != 0 ? 1 : 0)
            #expect(derOctets <= 20, "serial would encode in \(derOctets) octets")
            #expect(b.suffix(19) == ArraySlice([UInt8](repeating: 0xAB, count: 19)))
        }
        #expect(throws: KeylineError(.internalError, "")) { try CertificateFactory.serial(fromRandom: [1, 2, 3]) }
    }

    @Test("leaf carries exactly keyUsage, EKU clientAuth, SKI and AKI = CA SKI; no basicConstraints")
    func leafExtensions() throws {
        let ca = try TestPKI.ca()
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let cert = try leaf(ca: ca, key: key)
        #expect(cert.version == .v3)
        let ku = try #require(try cert.extensions.keyUsage)
        #expect(ku == KeyUsage(digitalSignature: true))
        #expect(cert.extensions[oid: .X509ExtensionID.keyUsage]?.critical == true)
        #expect(try cert.extensions.extendedKeyUsage == ExtendedKeyUsage([.clientAuth]))
        #expect(try cert.extensions.basicConstraints == nil)
        let aki = try #require(try cert.extensions.authorityKeyIdentifier)
        #expect(aki.keyIdentifier.map(Array.init) == ca.ca.subjectKeyIdentifier)
        #expect(aki.authorityCertIssuer == nil && aki.authorityCertSerialNumber == nil)
        let ski = try #require(try cert.extensions.subjectKeyIdentifier)
        #expect(
            Array(ski.keyIdentifier) == Array(Insecure.SHA1.hash(data: Array(key.publicKey.subjectPublicKeyInfoBytes))))
        #expect(cert.extensions.count == 4)
        #expect(cert.signatureAlgorithm == .ecdsaWithSHA256)
        #expect(cert.issuer == ca.ca.certificate.subject)
        #expect(ca.ca.certificate.publicKey.isValidSignature(cert.signature, for: cert))
    }

    @Test("the subject is the CN plus the profile's fixed O and OU, nothing from the CSR")
    func subject() throws {
        var p = profile
        p.organization = "Acme Devices"
        p.organizationalUnit = "Line 1"
        let name = try CertificateFactory.leafSubject(cn: "dev-1", profile: p)
        #expect(
            name
                == (try DistinguishedName {
                    OrganizationName("Acme Devices"); OrganizationalUnitName("Line 1"); CommonName("dev-1")
                }))
        #expect(
            try CertificateFactory.leafSubject(cn: "dev-1", profile: profile)
                == (try DistinguishedName { CommonName("dev-1") }))
    }

    @Test("validity: notBefore five minutes back, notAfter capped at the CA's notAfter")
    func validity() throws {
        let ca = try TestPKI.ca(notAfter: TestPKI.now.addingTimeInterval(400 * 86400))
        let v = try CertificateFactory.leafValidity(
            now: TestPKI.now, validityDays: 3650, minValidityDays: 365, ca: ca.ca.certificate
        ).get()
        #expect(v.notBefore == TestPKI.now.addingTimeInterval(-300))
        #expect(v.notAfter == ca.ca.certificate.notValidAfter)
        let long = try TestPKI.ca()
        let w = try CertificateFactory.leafValidity(
            now: TestPKI.now, validityDays: 30, minValidityDays: 1, ca: long.ca.certificate
        ).get()
        #expect(w.notAfter == TestPKI.now.addingTimeInterval(30 * 86400))
    }

    @Test("refuses when the CA leaves less than min_validity_days")
    func minValidity() throws {
        let ca = try TestPKI.ca(notAfter: TestPKI.now.addingTimeInterval(100 * 86400))
        let r = CertificateFactory.leafValidity(
            now: TestPKI.now, validityDays: 3650, minValidityDays: 365, ca: ca.ca.certificate)
        guard case .failure(let e) = r else {
            Issue.record("accepted a CA with 100 days left under min_validity_days 365")
            return
        }
        #expect(e.rule == "validity")
    }

    @Test("a P-384 CA signs with ECDSA-SHA384, an RSA CA with SHA-256")
    func signatureAlgorithms() throws {
        let p384 = try TestPKI.ca(issuingKey: Certificate.PrivateKey(P384.Signing.PrivateKey()))
        #expect(try leaf(ca: p384).signatureAlgorithm == .ecdsaWithSHA384)
        let rsa = try TestPKI.ca(issuingKey: Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048)))
        #expect(try leaf(ca: rsa).signatureAlgorithm == .sha256WithRSAEncryption)
    }

    @Test("CA certificates: CA:TRUE with pathlen 0 for the issuing CA, keyCertSign + cRLSign, SKI, AKI")
    func caCertificates() throws {
        let ca = try TestPKI.ca()
        let c = ca.ca.certificate
        #expect(try c.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        #expect(try c.extensions.keyUsage == KeyUsage(keyCertSign: true, cRLSign: true))
        #expect(
            try c.extensions.authorityKeyIdentifier?.keyIdentifier.map(Array.init)
                == Array(try #require(try ca.ca.chain[0].extensions.subjectKeyIdentifier).keyIdentifier))
        #expect(IssuingCA.checkIsCA(c) == .accept)
        #expect(IssuingCA.checkIsCA(ca.ca.chain[0]) != .accept, "a root without pathlen:0 cannot be the issuing CA")
        #expect(IssuingCA.checkIsCA(try leaf(ca: ca)) != .accept)
    }

    @Test("CA validity check refuses expired and not-yet-valid CAs")
    func caValidity() throws {
        let ca = try TestPKI.ca()
        #expect(ca.ca.checkValidity(at: TestPKI.now) == .accept)
        #expect(ca.ca.checkValidity(at: TestPKI.now.addingTimeInterval(-2 * 86400)) != .accept)
        #expect(ca.ca.checkValidity(at: TestPKI.now.addingTimeInterval(6 * 365 * 86400)) != .accept)
    }
}

@Suite("Hash chain")
struct ChainHashTests {
    static func content(cn: String = "dev-1") -> RecordContent {
        RecordContent(
            cn: cn, serialHex: "01AB", certificateFingerprint: String(repeating: "A", count: 64),
            publicKeySHA256: String(repeating: "B", count: 64),
            caFingerprint: String(repeating: "C", count: 64), caName: "dev", profile: "default", stationID: "st",
            operatorName: "op",
            keyOrigin: .device, hardwareID: nil, notBefore: TestPKI.now,
            notAfter: TestPKI.now.addingTimeInterval(86400),
            certificateDER: [1, 2, 3], createdAt: TestPKI.now)
    }

    @Test("the same content and position give the same hash")
    func deterministic() {
        let a = ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: Self.content())
        #expect(a == ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: Self.content()))
        #expect(a.count == 64)
    }

    @Test("any change of field, position or predecessor changes the hash")
    func sensitive() {
        let base = ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: Self.content())
        var changed: [String] = []
        var c = Self.content(); c.cn = "dev-2";
        changed.append(ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: c))
        c = Self.content(); c.hardwareID = "";
        changed.append(ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: c))
        c = Self.content(); c.certificateDER = [1, 2, 4];
        changed.append(ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: c))
        c = Self.content(); c.keyOrigin = .station;
        changed.append(ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: c))
        c = Self.content(); c.createdAt = c.createdAt.addingTimeInterval(0.001);
        changed.append(ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: c))
        changed.append(ChainHash.record(seq: 2, prevHash: LedgerRecord.genesisHash, content: Self.content()))
        changed.append(ChainHash.record(seq: 1, prevHash: String(repeating: "1", count: 64), content: Self.content()))
        for h in changed { #expect(h != base) }
        #expect(Set(changed).count == changed.count)
    }

    @Test("field boundaries are unambiguous (length-prefixed)")
    func boundaries() {
        var a = Self.content(); a.caName = "ab"; a.profile = "c"
        var b = Self.content(); b.caName = "a"; b.profile = "bc"
        #expect(
            ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: a)
                != ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: b))
    }

    /// Hashes computed outside Swift (Python's hashlib over the documented layout: the tag and each field as a
    /// 4-byte big-endian length and its UTF-8, absent as FF FF FF FF): a ledger written before a change must verify
    /// after it.
    @Test("record and event hashes are the documented layout's, byte for byte (values computed with Python's hashlib)")
    func golden() {
        #expect(
            ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: Self.content())
                == "D0EAF200478765A63809555413C1DA03C7AA13A55A4F3C295C5CA9AF45EADD1B")
        var c = Self.content()
        c.hardwareID = "hw-7"
        c.workOrder = "wo-9"
        c.attributes = DeviceAttributes(
            description: "Device dev-1 — ünïcode", tags: ["a", "b"], productPRN: "prn:1:product",
            cohortPRN: "prn:1:cohort", target: nil)
        c.reissueOf = 42
        #expect(
            ChainHash.record(seq: 1, prevHash: LedgerRecord.genesisHash, content: c)
                == "5DFA7302C71251C7EDB08A32D78C38803A5644EEF8CC80FE02C61400696DDCFC")
        let refused = EventContent(
            kind: .refused, recordSeq: nil, cn: "dev-1", detail: "unique-cn: taken", stationID: "st",
            operatorName: "op",
            at: TestPKI.now.addingTimeInterval(0.123))
        #expect(
            ChainHash.event(seq: 7, prevHash: LedgerRecord.genesisHash, content: refused)
                == "C7288B773F785606D74275ABD9D553687F97D0CF5762D2C22B3B2675C09DAF2A")
        let issued = EventContent(
            kind: .issued, recordSeq: 3, cn: "dev-1", detail: "", stationID: "st", operatorName: "op", at: TestPKI.now)
        #expect(
            ChainHash.event(seq: 8, prevHash: String(repeating: "F", count: 64), content: issued)
                == "42290B09DD4FA04B95388199C5EA9E78C44BB7D97A0EBCC9475FF385CC33030F")
    }

    @Test("expected state follows the last state-changing event")
    func expectedState() {
        #expect(ChainHash.expectedState(after: [.issued]) == .issued)
        #expect(ChainHash.expectedState(after: [.issued, .delivered]) == .delivered)
        #expect(ChainHash.expectedState(after: [.issued, .delivered, .revoked]) == .revoked)
        #expect(ChainHash.expectedState(after: [.issued, .failed]) == .failed)
    }
}
