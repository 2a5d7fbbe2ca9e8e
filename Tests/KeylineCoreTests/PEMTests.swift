import Crypto
import SwiftASN1
import Testing
import X509
import _CryptoExtras

@testable import KeylineCore

@Suite("PEM")
struct PEMTests {
    @Test("PEM.encode gives swift-asn1's pemString byte for byte, at every length around the line and padding edges")
    func matchesSwiftASN1() {
        var rng = SystemRandomNumberGenerator()
        for length in Array(0...200) + [479, 480, 481, 1024, 4096] {
            let der = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let ours = PEM.encode(der, label: "CERTIFICATE")
            let theirs = PEMDocument(type: "CERTIFICATE", derBytes: der).pemString
            #expect(ours == theirs, "length \(length)")
        }
    }

    @Test("a P-256 key's PEM is what swift-crypto's pemRepresentation gives, and it opens again")
    func privateKey() throws {
        for _ in 0..<20 {
            let key = P256.Signing.PrivateKey(compactRepresentable: false)
            let pem = PEM.encode(Array(key.derRepresentation), label: "PRIVATE KEY")
            #expect(pem == key.pemRepresentation)
            #expect(try P256.Signing.PrivateKey(pemRepresentation: pem).rawRepresentation == key.rawRepresentation)
        }
    }
}

@Suite("Device keys")
struct DeviceKeyTests {
    @Test("station-made P-256 keys are distinct, their public key is their scalar's, and they sign and verify")
    func p256() throws {
        var seen = Set<[UInt8]>()
        for _ in 0..<200 {
            let key = DeviceKeys.p256()
            let raw = Array(key.rawRepresentation)
            #expect(raw.count == 32)
            #expect(seen.insert(raw).inserted, "a scalar came twice")
            // The same scalar through swift-crypto's own import gives the same public key.
            let again = try P256.Signing.PrivateKey(rawRepresentation: raw)
            #expect(again.publicKey.x963Representation == key.publicKey.x963Representation)
            let message = Array("device".utf8)
            #expect(key.publicKey.isValidSignature(try key.signature(for: message), for: message))
        }
    }
}

@Suite("Key encodings made once")
struct KeyEncodingTests {
    @Test("pkcs8P256 from the scalar and the point is swift-crypto's derRepresentation byte for byte, and opens again")
    func pkcs8MatchesSwiftCrypto() throws {
        for _ in 0..<200 {
            let (key, scalar) = DeviceKeys.p256WithScalar()
            #expect(scalar == Array(key.rawRepresentation))
            let ours = try CertificateFactory.pkcs8P256(scalar: scalar, x963: Array(key.publicKey.x963Representation))
            #expect(ours == Array(key.derRepresentation))
            #expect(try P256.Signing.PrivateKey(derRepresentation: ours).rawRepresentation == key.rawRepresentation)
        }
    }

    @Test("pkcs8P256 refuses a scalar or a point of the wrong shape")
    func pkcs8RefusesBadShapes() {
        let key = P256.Signing.PrivateKey()
        let scalar = Array(key.rawRepresentation)
        let x963 = Array(key.publicKey.x963Representation)
        #expect(throws: KeylineError.self) { try CertificateFactory.pkcs8P256(scalar: scalar.dropLast(), x963: x963) }
        #expect(throws: KeylineError.self) {
            try CertificateFactory.pkcs8P256(scalar: scalar, x963: Array(key.publicKey.compressedRepresentation))
        }
        #expect(throws: KeylineError.self) {
            try CertificateFactory.pkcs8P256(scalar: scalar, x963: [0x03] + x963.dropFirst())
        }
    }

    @Test(
        "the key identifier and fingerprint taken from a SubjectPublicKeyInfo equal those taken from the key (P-256, P-384, RSA)"
    )
    func fromSPKI() throws {
        let keys: [Certificate.PublicKey] = [
            Certificate.PublicKey(P256.Signing.PrivateKey().publicKey),
            Certificate.PublicKey(P384.Signing.PrivateKey().publicKey),
            Certificate.PublicKey(try _RSA.Signing.PrivateKey(keySize: .bits2048).publicKey),
        ]
        for key in keys {
            let spki = CertificateFactory.spkiDER(key)
            #expect(try CertificateFactory.keyIdentifier(spki: spki) == CertificateFactory.keyIdentifier(of: key))
            #expect(CertificateFactory.publicKeyFingerprint(spki: spki) == CertificateFactory.publicKeyFingerprint(key))
            #expect(try CertificateFactory.subjectPublicKeyBits(spki: spki) == Array(key.subjectPublicKeyInfoBytes))
        }
        let p256 = P256.Signing.PrivateKey().publicKey
        #expect(
            try CertificateFactory.subjectPublicKeyBits(spki: CertificateFactory.spkiDER(Certificate.PublicKey(p256)))
                == Array(p256.x963Representation))
        #expect(throws: (any Error).self) { try CertificateFactory.keyIdentifier(spki: [0x30, 0x00]) }
        #expect(throws: (any Error).self) { try CertificateFactory.keyIdentifier(spki: [0x04, 0x01, 0x00]) }
    }

    @Test("SystemRandom gives exactly the bytes asked for, past getentropy's 256 a call, and never the same twice")
    func systemRandom() {
        for count in [0, 1, 20, 32, 255, 256, 257, 1000] {
            #expect(SystemRandom.bytes(count).count == count)
        }
        // Each 256-byte call fills its own part: no part is left zero (each is 2^-2048 likely to be all zero).
        let long = SystemRandom.bytes(1000)
        for start in stride(from: 0, to: 1000, by: 256) {
            #expect(long[start..<min(start + 256, 1000)].contains { $0 != 0 }, "bytes from \(start)")
        }
        var seen = Set<[UInt8]>()
        for _ in 0..<1000 { #expect(seen.insert(SystemRandom.bytes(20)).inserted) }
        var secret = SystemRandom.bytes(32)
        SystemRandom.wipe(&secret)
        #expect(secret == [UInt8](repeating: 0, count: 32), "wipe leaves zeros of the same length")
    }
}
