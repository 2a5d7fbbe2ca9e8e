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
