import Crypto
import Foundation
import KeylineCore
import KeylineCustody

/// The station's own signing key (not a CA key): it signs export summaries so QA can prove a manifest is what the
/// station wrote. Private key `secrets/station-signing.key` (PKCS#8, mode 0600, key guard applies); public key
/// `station-signing.pem` beside station.toml, for anyone to verify with (`openssl dgst -sha256 -verify`).
public enum StationSigningKey {
    public static let privatePath = "secrets/station-signing.key"
    public static let publicPath = "station-signing.pem"

    /// Makes the key pair in `directory` (refuses to replace one).
    @discardableResult
    public static func create(in directory: String) throws -> P256.Signing.PrivateKey {
        let key = P256.Signing.PrivateKey()
        try SafeFile.write(
            key.pemRepresentation + "\n", to: "\(directory)/\(privatePath)", mode: 0o600, exclusive: true)
        try SafeFile.write(key.publicKey.pemRepresentation + "\n", to: "\(directory)/\(publicPath)", exclusive: true)
        return key
    }

    /// Checks without opening: the key passes the key guard, and a public key never stands without its private key.
    public static func check(in directory: String) throws {
        let path = "\(directory)/\(privatePath)"
        if FileManager.default.fileExists(atPath: path) {
            try FileGuard.checkSecretFile(path, what: "station signing key")
        } else if FileManager.default.fileExists(atPath: "\(directory)/\(publicPath)") {
            throw orphanedPublicKey(directory)
        }
    }

    static func orphanedPublicKey(_ directory: String) -> KeylineError {
        KeylineError(
            .keyGuard,
            "station signing key \(directory)/\(privatePath) is missing but \(directory)/\(publicPath) exists; restore the key from backup, or move \(publicPath) aside to make a new pair (and give QA the new public key)"
        )
    }

    /// Opens the station's key through the key guard, making it first for a station that predates it.
    public static func load(in directory: String) throws -> (key: P256.Signing.PrivateKey, created: Bool) {
        let path = "\(directory)/\(privatePath)"
        if !FileManager.default.fileExists(atPath: path) {
            // A public key without its private key: QA may hold that public key, so never replace it silently.
            if FileManager.default.fileExists(atPath: "\(directory)/\(publicPath)") {
                throw orphanedPublicKey(directory)
            }
            return (try create(in: directory), true)
        }
        let bytes = try FileGuard.readSecretFile(path, what: "station signing key")
        do {
            return (try P256.Signing.PrivateKey(pemRepresentation: String(decoding: bytes, as: UTF8.self)), false)
        } catch {
            throw KeylineError(.dataError, "station signing key \(path) is not a P-256 private key")
        }
    }

    /// The public key from `path` (default: the station's `station-signing.pem`).
    public static func publicKey(at path: String) throws -> P256.Signing.PublicKey {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeylineError(.ioError, "cannot read public key \(path)")
        }
        do {
            return try P256.Signing.PublicKey(pemRepresentation: String(decoding: data, as: UTF8.self))
        } catch {
            throw KeylineError(.dataError, "\(path) is not a P-256 public key in PEM")
        }
    }
}
