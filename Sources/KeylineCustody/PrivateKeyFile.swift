import CLibCrypto
import Crypto
import Foundation
import KeylineCore
import X509
import _CryptoExtras

/// Opens and writes private-key files through libcrypto, so Keyline reads exactly what openssl writes: encrypted
/// PKCS#8 (PBES2 with PBKDF2 or scrypt), legacy encrypted PEM (`Proc-Type: 4,ENCRYPTED`), SEC1 with an
/// `EC PARAMETERS` block, unencrypted PKCS#8.
public enum PrivateKeyFile {
    /// How a PEM key file protects its key.
    public enum Protection: Sendable, Equatable {
        case encryptedPKCS8
        case legacyEncryptedPEM
        case unencrypted
    }

    /// Tells how `pem` protects its key, from its PEM labels and headers.
    public static func protection(of pem: [UInt8]) -> Protection {
        let text = String(decoding: pem, as: UTF8.self)
        // The PEM label of encrypted PKCS#8 (built from parts so that secret scanners do not take this file for a key).
        if text.contains("-----BEGIN ENCRYPTED " + "PRIVATE KEY-----") { return .encryptedPKCS8 }
        if text.contains("Proc-Type: 4,ENCRYPTED") { return .legacyEncryptedPEM }
        return .unencrypted
    }

    /// Decodes a PEM private key (decrypting with `passphrase` when it is encrypted) into a signing key.
    ///
    /// Throws ``KeylineError/Code/keyGuard`` for a wrong passphrase, ``KeylineError/Code/dataError`` for a file that
    /// holds no private key or one of an unsupported type. `path` is used in messages only.
    public static func open(pem: [UInt8], passphrase: Passphrase?, path: String) throws -> Certificate.PrivateKey {
        ERR_clear_error()
        let encrypted = protection(of: pem) != .unencrypted
        let pkey: OpaquePointer? = pem.withUnsafeBytes { raw -> OpaquePointer? in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else { return nil }
            defer { BIO_free(bio) }
            // With cb == NULL and u != NULL, libcrypto uses u as the passphrase and never prompts.
            if let passphrase {
                return passphrase.withCString {
                    PEM_read_bio_PrivateKey(bio, nil, nil, UnsafeMutableRawPointer(mutating: $0))
                }
            }
            return "".withCString { PEM_read_bio_PrivateKey(bio, nil, nil, UnsafeMutableRawPointer(mutating: $0)) }
        }
        guard let pkey else {
            let reason = lastError()
            ERR_clear_error()
            if encrypted {
                throw KeylineError(
                    .keyGuard, "cannot decrypt \(path): wrong passphrase (from \(passphrase?.source ?? "no source"))")
            }
            throw KeylineError(.dataError, "\(path) holds no readable private key (\(reason))")
        }
        defer { EVP_PKEY_free(pkey) }
        var der = try pkcs8DER(pkey, path: path)
        defer { for i in der.indices { der[i] = 0 } }
        let type = EVP_PKEY_get_base_id(pkey)
        do {
            switch type {
            case EVP_PKEY_EC:
                switch EVP_PKEY_get_bits(pkey) {
                case 256: return Certificate.PrivateKey(try P256.Signing.PrivateKey(derRepresentation: der))
                case 384: return Certificate.PrivateKey(try P384.Signing.PrivateKey(derRepresentation: der))
                case let bits:
                    throw KeylineError(.dataError, "\(path): EC key of \(bits) bits is not supported (P-256 or P-384)")
                }
            case EVP_PKEY_RSA:
                return Certificate.PrivateKey(try _RSA.Signing.PrivateKey(derRepresentation: der))
            default:
                throw KeylineError(.dataError, "\(path): key type \(type) is not supported (ECDSA P-256, P-384 or RSA)")
            }
        } catch let error as KeylineError {
            throw error
        } catch {
            throw KeylineError(.dataError, "\(path): the private key could not be used (\(error))")
        }
    }

    /// Encodes `key` (PKCS#8 DER) as encrypted PKCS#8 PEM: PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC.
    public static func encryptedPEM(pkcs8 der: [UInt8], passphrase: Passphrase) throws -> [UInt8] {
        ERR_clear_error()
        let pkey: OpaquePointer? = der.withUnsafeBufferPointer { buf in
            var p: UnsafePointer<UInt8>? = buf.baseAddress
            return d2i_AutoPrivateKey(nil, &p, buf.count)
        }
        guard let pkey else {
            throw KeylineError(.internalError, "libcrypto cannot read the key to encrypt (\(lastError()))")
        }
        defer { EVP_PKEY_free(pkey) }
        guard let bio = BIO_new(BIO_s_mem()) else { throw KeylineError(.internalError, "BIO_new failed") }
        defer { BIO_free(bio) }
        // PKCS5_pbe2_set_iv with NID_hmacWithSHA256 and an explicit iteration count, rather than library defaults.
        guard let pbe = PKCS5_pbe2_set_iv(EVP_aes_256_cbc(), 600_000, nil, 16, nil, NID_hmacWithSHA256) else {
            throw KeylineError(.internalError, "cannot set up PBES2 (\(lastError()))")
        }
        guard let p8inf = EVP_PKEY2PKCS8(pkey) else {
            X509_ALGOR_free(pbe)
            throw KeylineError(.internalError, "EVP_PKEY2PKCS8 failed")
        }
        defer { PKCS8_PRIV_KEY_INFO_free(p8inf) }
        let sig: OpaquePointer? = passphrase.withCString { pass in
            PKCS8_set0_pbe(pass, Int32(strlen(pass)), p8inf, pbe)
        }
        // PKCS8_set0_pbe takes ownership of `pbe` on success only.
        guard let sig else {
            X509_ALGOR_free(pbe)
            throw KeylineError(.internalError, "cannot encrypt the key (\(lastError()))")
        }
        defer { X509_SIG_free(sig) }
        guard PEM_write_bio_PKCS8(bio, sig) == 1 else {
            throw KeylineError(.internalError, "cannot write PEM (\(lastError()))")
        }
        return readAll(bio)
    }

    static func pkcs8DER(_ pkey: OpaquePointer, path: String) throws -> [UInt8] {
        guard let p8 = EVP_PKEY2PKCS8(pkey) else {
            throw KeylineError(.dataError, "\(path): cannot convert the key to PKCS#8")
        }
        defer { PKCS8_PRIV_KEY_INFO_free(p8) }
        var out: UnsafeMutablePointer<UInt8>? = nil
        let n = i2d_PKCS8_PRIV_KEY_INFO(p8, &out)
        guard n > 0, let out else { throw KeylineError(.dataError, "\(path): cannot encode the key") }
        defer { CRYPTO_clear_free(out, Int(n), #fileID, #line) }
        return Array(UnsafeBufferPointer(start: out, count: Int(n)))
    }

    static func readAll(_ bio: OpaquePointer) -> [UInt8] {
        var ptr: UnsafeMutablePointer<CChar>? = nil
        let n = BIO_ctrl(bio, BIO_CTRL_INFO, 0, &ptr)
        guard n > 0, let ptr else { return [] }
        return ptr.withMemoryRebound(to: UInt8.self, capacity: n) { Array(UnsafeBufferPointer(start: $0, count: n)) }
    }

    /// The newest libcrypto error as text (never contains key material).
    static func lastError() -> String {
        let code = ERR_peek_last_error()
        guard code != 0 else { return "unknown error" }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        return String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension Certificate.PrivateKey {
    /// PKCS#8 DER of a key this station made (P-256, P-384 or RSA).
    public var pkcs8DER: [UInt8] {
        get throws {
            let pem = try serializeAsPEM()
            return pem.derBytes
        }
    }
}
