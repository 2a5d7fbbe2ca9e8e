import Testing
import Crypto
import X509
import SwiftASN1
@testable import KeylineCore

@Test func debugSKI() throws {
    let k = P256.Signing.PrivateKey()
    let pub = Certificate.PublicKey(k.publicKey)
    print(Array(pub.subjectPublicKeyInfoBytes).count)
    _ = try CertificateFactory.keyIdentifier(of: pub)
}
