import Crypto
import Foundation
import SwiftASN1
import X509
import _CryptoExtras

/// Builds and signs certificates. Pure: the time, the serial's random bytes and the signing key are passed in.
public enum CertificateFactory {
    /// Turns random bytes into a positive DER INTEGER serial of at most 20 octets.
    ///
    /// Takes the first 20 bytes and clears the top bit, so the value is positive without a padding byte and keeps
    /// at least 64 bits of entropy from the caller's CSPRNG (159 bits when given 20 random bytes).
    public static func serial(fromRandom bytes: [UInt8]) throws -> Certificate.SerialNumber {
        guard bytes.count >= 9 else { throw KeylineError(.internalError, "serial needs at least 9 random bytes") }
        var b = Array(bytes.prefix(20))
        b[0] &= 0x7F
        if b.allSatisfy({ $0 == 0 }) { b[b.count - 1] = 1 }
        return Certificate.SerialNumber(bytes: b)
    }

    /// The RFC 5280 method-1 key identifier: SHA-1 of the subjectPublicKey BIT STRING's contents.
    ///
    /// (swift-certificates' `subjectPublicKeyInfoBytes` holds exactly those contents, not the whole SPKI.)
    public static func keyIdentifier(of key: Certificate.PublicKey) throws -> [UInt8] {
        Array(Insecure.SHA1.hash(data: Array(key.subjectPublicKeyInfoBytes)))
    }

    /// The RFC 5280 method-1 key identifier from a SubjectPublicKeyInfo's DER (``spkiDER(_:)``): the same value as
    /// ``keyIdentifier(of:)``, without encoding the key again.
    public static func keyIdentifier(spki: [UInt8]) throws -> [UInt8] {
        Array(Insecure.SHA1.hash(data: try subjectPublicKeyBits(spki: spki)))
    }

    /// The subjectPublicKey BIT STRING's contents of a SubjectPublicKeyInfo DER that Keyline made (``spkiDER(_:)``;
    /// for an EC key, its X9.63 point). Anything else is an internal error.
    public static func subjectPublicKeyBits(spki: [UInt8]) throws -> [UInt8] {
        do {
            return try DER.sequence(DER.parse(spki), identifier: .sequence) { nodes in
                guard nodes.next() != nil else {
                    throw KeylineError(.internalError, "a SubjectPublicKeyInfo without an algorithm")
                }
                let bits = try ASN1BitString(derEncoded: &nodes)
                guard bits.paddingBits == 0 else {
                    throw KeylineError(.internalError, "a SubjectPublicKeyInfo whose key has padding bits")
                }
                return Array(bits.bytes)
            }
        } catch let error as KeylineError {
            throw error
        } catch {
            throw KeylineError(.internalError, "a SubjectPublicKeyInfo that is not DER: \(error)")
        }
    }

    /// A P-256 private key's PKCS #8 DER (RFC 5208, with the RFC 5915 ECPrivateKey inside, its public key included
    /// and its curve named only in the outer algorithm), byte for byte what `P256.Signing.PrivateKey`'s
    /// `derRepresentation` gives, from the 32-byte scalar and the X9.63 point already at hand: computing the point's
    /// encoding again costs a field inversion.
    public static func pkcs8P256(scalar: [UInt8], x963: [UInt8]) throws -> [UInt8] {
        guard scalar.count == 32, x963.count == 65, x963[0] == 0x04 else {
            throw KeylineError(.internalError, "a P-256 key needs a 32-byte scalar and a 65-byte uncompressed point")
        }
        var der: [UInt8] = [
            0x30, 0x81, 0x87, 0x02, 0x01, 0x00,  // PrivateKeyInfo, version 0
            0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01,  // id-ecPublicKey
            0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07,  // prime256v1
            0x04, 0x6D, 0x30, 0x6B, 0x02, 0x01, 0x01, 0x04, 0x20,  // ECPrivateKey, version 1, privateKey
        ]
        der.reserveCapacity(138)
        der += scalar
        der += [0xA1, 0x44, 0x03, 0x42, 0x00]  // [1] publicKey BIT STRING
        der += x963
        return der
    }

    /// The DER of the whole SubjectPublicKeyInfo.
    public static func spkiDER(_ key: Certificate.PublicKey) -> [UInt8] {
        var serializer = DER.Serializer()
        // Serializing a well-formed public key cannot fail; an empty result would make every key collide, so trap.
        try! serializer.serialize(key)
        return serializer.serializedBytes
    }

    /// SHA-256 of the SubjectPublicKeyInfo DER, upper-case hex: the ledger's public-key identity.
    public static func publicKeyFingerprint(_ key: Certificate.PublicKey) -> String {
        publicKeyFingerprint(spki: spkiDER(key))
    }

    /// ``publicKeyFingerprint(_:)`` of a SubjectPublicKeyInfo DER already made.
    public static func publicKeyFingerprint(spki: [UInt8]) -> String {
        Hex.sha256(spki)
    }

    /// The AKI key identifier of a DER certificate, upper-case hex (nil when it has none).
    public static func authorityKeyIdentifierHex(der: [UInt8]) throws -> String? {
        let cert = try Certificate(derEncoded: der)
        return try cert.extensions.authorityKeyIdentifier?.keyIdentifier.map { Hex.upper($0) }
    }

    /// The DER encoding of a certificate.
    public static func der(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }

    /// The signature algorithm a CA key signs with: ECDSA-SHA256 for P-256, SHA-384 for P-384, SHA-256 for RSA.
    public static func signatureAlgorithm(for key: Certificate.PublicKey) -> Certificate.SignatureAlgorithm {
        if P384.Signing.PublicKey(key) != nil { return .ecdsaWithSHA384 }
        if P256.Signing.PublicKey(key) != nil { return .ecdsaWithSHA256 }
        if _RSA.Signing.PublicKey(key) != nil { return .sha256WithRSAEncryption }
        return .ecdsaWithSHA256
    }

    /// The validity window of a leaf issued at `now`: notBefore five minutes back (never before the CA's own),
    /// notAfter the earlier of `validityDays` ahead and the CA's notAfter. Refuses when less than
    /// `minValidityDays` would remain.
    public static func leafValidity(
        now: Date,
        validityDays: Int,
        minValidityDays: Int,
        ca: Certificate
    ) -> Result<(notBefore: Date, notAfter: Date), KeylineError> {
        let wholeNow = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        let notBefore = max(wholeNow.addingTimeInterval(-300), ca.notValidBefore)
        let wanted = wholeNow.addingTimeInterval(Double(validityDays) * 86400)
        let notAfter = min(wanted, ca.notValidAfter)
        let minimum = wholeNow.addingTimeInterval(Double(minValidityDays) * 86400)
        if notAfter < minimum {
            return .failure(
                .refused(
                    "validity",
                    "the CA's notAfter \(Timestamp.iso(ca.notValidAfter)) leaves less than the profile's min_validity_days (\(minValidityDays))"
                )
            )
        }
        return .success((notBefore, notAfter))
    }

    /// The subject of a leaf: the profile's fixed O and OU (when set) and the CN.
    public static func leafSubject(cn: String, profile: Profile) throws -> DistinguishedName {
        try DistinguishedName {
            if let o = profile.organization { OrganizationName(o) }
            if let ou = profile.organizationalUnit { OrganizationalUnitName(ou) }
            CommonName(cn)
        }
    }

    /// Builds and signs a device leaf.
    ///
    /// X.509 v3; keyUsage critical digitalSignature; extendedKeyUsage clientAuth; SKI; AKI = the CA's SKI; no
    /// basicConstraints (so no explicitly encoded default). The caller has already run the policy.
    /// `subjectKeyIdentifier`, when given, must be ``keyIdentifier(of:)`` of `publicKey` (made once per key by
    /// callers that hold its SubjectPublicKeyInfo anyway).
    public static func leaf(
        cn: String,
        publicKey: Certificate.PublicKey,
        profile: Profile,
        ca: IssuingCA,
        signer: Certificate.PrivateKey,
        serial: Certificate.SerialNumber,
        notBefore: Date,
        notAfter: Date,
        subjectKeyIdentifier: [UInt8]? = nil
    ) throws -> Certificate {
        let ski = try subjectKeyIdentifier ?? keyIdentifier(of: publicKey)
        // Debug builds (the tests) check a given identifier against the key itself.
        assert(subjectKeyIdentifier == nil || (try? keyIdentifier(of: publicKey)) == ski, "SKI is not the key's")
        let extensions = try Certificate.Extensions {
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.clientAuth])
            SubjectKeyIdentifier(keyIdentifier: ArraySlice(ski))
            AuthorityKeyIdentifier(keyIdentifier: ArraySlice(ca.subjectKeyIdentifier))
        }
        return try Certificate(
            version: .v3,
            serialNumber: serial,
            publicKey: publicKey,
            notValidBefore: notBefore,
            notValidAfter: notAfter,
            issuer: ca.certificate.subject,
            subject: try leafSubject(cn: cn, profile: profile),
            signatureAlgorithm: signatureAlgorithm(for: ca.certificate.publicKey),
            extensions: extensions,
            issuerPrivateKey: signer
        )
    }

    /// The certificate a backend asks for when a CA is registered: subject CN exactly the verification `code`,
    /// signed by the CA's key, valid for `validity` seconds from five minutes ago (at most the CA's notAfter).
    ///
    /// An end-entity certificate (keyUsage digitalSignature, SKI, AKI) for a throwaway key; it is proof that the
    /// registrant holds the CA key and nothing else, so it is never recorded as a device.
    public static func verificationCertificate(
        code: String, publicKey: Certificate.PublicKey, ca: IssuingCA, signer: Certificate.PrivateKey,
        serial: Certificate.SerialNumber, now: Date, validity: TimeInterval = 7 * 86400
    ) throws -> Certificate {
        let whole = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        let notBefore = max(whole.addingTimeInterval(-300), ca.certificate.notValidBefore)
        let notAfter = min(whole.addingTimeInterval(validity), ca.certificate.notValidAfter)
        let extensions = try Certificate.Extensions {
            Critical(KeyUsage(digitalSignature: true))
            SubjectKeyIdentifier(keyIdentifier: ArraySlice(try keyIdentifier(of: publicKey)))
            AuthorityKeyIdentifier(keyIdentifier: ArraySlice(ca.subjectKeyIdentifier))
        }
        return try Certificate(
            version: .v3, serialNumber: serial, publicKey: publicKey, notValidBefore: notBefore,
            notValidAfter: notAfter,
            issuer: ca.certificate.subject, subject: try DistinguishedName { CommonName(code) },
            signatureAlgorithm: signatureAlgorithm(for: ca.certificate.publicKey), extensions: extensions,
            issuerPrivateKey: signer)
    }

    /// Builds a CA certificate: self-signed root when `issuer` is nil, else an intermediate signed by it.
    ///
    /// basicConstraints critical CA:TRUE (with `pathLength` when given); keyUsage critical keyCertSign + cRLSign;
    /// SKI; AKI for intermediates.
    public static func caCertificate(
        subject: DistinguishedName,
        publicKey: Certificate.PublicKey,
        pathLength: Int?,
        notBefore: Date,
        notAfter: Date,
        serial: Certificate.SerialNumber,
        issuer: (certificate: Certificate, key: Certificate.PrivateKey)?,
        selfKey: Certificate.PrivateKey
    ) throws -> Certificate {
        let ski = try keyIdentifier(of: publicKey)
        let issuerSKI: [UInt8]? = try issuer.map {
            try Array($0.certificate.extensions.subjectKeyIdentifier?.keyIdentifier ?? [])
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: pathLength))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(keyIdentifier: ArraySlice(ski))
            if let issuerSKI { AuthorityKeyIdentifier(keyIdentifier: ArraySlice(issuerSKI)) }
        }
        let signingKey = issuer?.key ?? selfKey
        return try Certificate(
            version: .v3,
            serialNumber: serial,
            publicKey: publicKey,
            notValidBefore: notBefore,
            notValidAfter: notAfter,
            issuer: issuer?.certificate.subject ?? subject,
            subject: subject,
            signatureAlgorithm: signatureAlgorithm(for: signingKey.publicKey),
            extensions: extensions,
            issuerPrivateKey: signingKey
        )
    }
}
