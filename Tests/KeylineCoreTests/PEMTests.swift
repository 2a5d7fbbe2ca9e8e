import Crypto
import SwiftASN1
import Testing

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
