import Crypto
import SwiftASN1
import Testing
import X509
import _CryptoExtras

@testable import KeylineCore

@Suite("Issuance policy")
struct PolicyTests {
    let policy = try! IssuancePolicy(profile: Profile(name: "default", caName: "test"))
    let wide = try! IssuancePolicy(profile: Profile(name: "wide", caName: "test", keyTypes: [.p256, .p384, .rsa2048]))

    func verdict(
        _ p: IssuancePolicy, _ der: [UInt8]
    ) throws -> Result<(cn: String, publicKey: Certificate.PublicKey), KeylineError> {
        p.evaluate(try CSRInput(bytes: der))
    }

    func refusedRule(_ r: Result<(cn: String, publicKey: Certificate.PublicKey), KeylineError>) -> String? {
        if case .failure(let e) = r { return e.rule ?? e.code.rawValue }
        return nil
    }

    @Test("accepts a P-256 CSR and returns its CN and key, from PEM and from DER")
    func acceptsP256() throws {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let der = try TestPKI.csr(cn: "dev-1", key: key)
        for input in [der, TestPKI.pem(der)] {
            let (cn, pub) = try verdict(policy, input).get()
            #expect(cn == "dev-1")
            #expect(pub == key.publicKey)
        }
    }

    @Test("P-384 and RSA-2048 only where the profile allows them")
    func keyTypesFollowProfile() throws {
        let p384 = try TestPKI.csr(cn: "d", key: Certificate.PrivateKey(P384.Signing.PrivateKey()))
        let rsa = try TestPKI.csr(cn: "d", key: Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048)))
        #expect(refusedRule(try verdict(policy, p384)) == "key-type")
        #expect(refusedRule(try verdict(policy, rsa)) == "key-type")
        #expect(refusedRule(try verdict(wide, p384)) == nil)
        #expect(refusedRule(try verdict(wide, rsa)) == nil)
    }

    @Test("RSA below the profile's minimum is refused naming its size")
    func rsaMinimum() throws {
        let strict = try IssuancePolicy(profile: Profile(name: "s", caName: "t", keyTypes: [.rsa3072]))
        let rsa = try TestPKI.csr(cn: "d", key: Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048)))
        guard case .failure(let e) = try verdict(strict, rsa) else {
            Issue.record("RSA-2048 accepted under rsa3072")
            return
        }
        #expect(e.rule == "key-type")
        #expect(e.reason.contains("RSA-2048"))
    }

    @Test("a CSR whose signature does not verify is refused (proof of possession)")
    func badSignature() throws {
        var der = try TestPKI.csr(cn: "dev-1")
        // The signature BIT STRING ends the CSR: flip a byte inside it.
        der[der.count - 5] ^= 0xFF
        #expect(refusedRule(try verdict(policy, der)) == "proof-of-possession")
    }

    @Test("a CSR signed by a different key than the one it carries is refused")
    func foreignSigner() throws {
        let claimed = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let signer = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let info = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName("x") }, privateKey: signer, attributes: .init())
        let forged = try CertificateSigningRequest(
            version: .v1, subject: info.subject, publicKey: claimed.publicKey, attributes: .init(),
            signatureAlgorithm: info.signatureAlgorithm, signature: info.signature)
        var s = DER.Serializer()
        try s.serialize(forged)
        #expect(refusedRule(try verdict(policy, s.serializedBytes)) == "proof-of-possession")
    }

    @Test("CN missing or given twice is refused")
    func cnCount() throws {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let none = try TestPKI.csr(subject: try DistinguishedName { OrganizationName("Acme") }, key: key)
        let twice = try TestPKI.csr(
            subject: try DistinguishedName {
                CommonName("a"); CommonName("b")
            }, key: key)
        #expect(refusedRule(try verdict(policy, none)) == "cn")
        #expect(refusedRule(try verdict(policy, twice)) == "cn")
    }

    @Test(
        "garbage, empty and truncated input is a data error",
        arguments: [[UInt8](), [0x00, 0x01, 0x02], Array("hello".utf8)])
    func garbage(_ bytes: [UInt8]) {
        #expect(throws: KeylineError(.dataError, "")) { try CSRInput(bytes: bytes) }
    }

    @Test("truncated DER and truncated PEM are data errors")
    func truncated() throws {
        let der = try TestPKI.csr(cn: "dev-1")
        #expect(throws: KeylineError(.dataError, "")) { try CSRInput(bytes: Array(der.prefix(der.count / 2))) }
        let pem = String(decoding: TestPKI.pem(der), as: UTF8.self)
        let cut = Array(pem.prefix(pem.count - 40).utf8)
        #expect(throws: KeylineError(.dataError, "")) { try CSRInput(bytes: cut) }
    }

    @Test("RSA-1024 is read by our own SPKI reader and refused by name")
    func rsa1024() throws {
        // swift-crypto cannot even make a 1024-bit key, so hand-build an SPKI with a 1024-bit modulus.
        let modulus: [UInt8] = [0x00, 0xC0] + [UInt8](repeating: 0x11, count: 127)
        var rsaKey = DER.Serializer()
        try rsaKey.appendConstructedNode(identifier: .sequence) { c in
            try c.serialize(ArraySlice(modulus))
            try c.serialize(65537)
        }
        var spki = DER.Serializer()
        try spki.appendConstructedNode(identifier: .sequence) { c in
            try c.appendConstructedNode(identifier: .sequence) { a in
                try a.serialize(ASN1ObjectIdentifier("1.2.840.113549.1.1.1"))
                try a.serialize(ASN1Null())
            }
            try c.serialize(ASN1BitString(bytes: ArraySlice(rsaKey.serializedBytes)))
        }
        let alg = try KeyAlgorithm(spki: try DER.parse(spki.serializedBytes))
        #expect(alg == .rsa(bits: 1024))
        guard case .refuse(let rule, let reason) = wide.checkKey(alg) else {
            Issue.record("RSA-1024 accepted")
            return
        }
        #expect(rule == "key-type")
        #expect(reason.contains("RSA-1024"))
    }
}
