import Crypto
import Foundation
import KeylineCore
import KeylineCustody
import KeylineLedger
import SwiftASN1
import X509

/// An opened station: its configuration and its ledger.
public struct Station: Sendable {
    public var config: StationConfig
    public var ledger: any Ledger

    /// Finds the station directory: `--station`, else `KEYLINE_STATION`, else the current directory.
    public static func locate(
        explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String {
        if let explicit, !explicit.isEmpty { return explicit }
        if let env = environment["KEYLINE_STATION"], !env.isEmpty { return env }
        return FileManager.default.currentDirectoryPath
    }

    /// Opens the station at `directory`: reads `station.toml` and opens its ledger. `readOnly` is for commands
    /// that only read (QA's `ledger verify`, `list`, `search`, `show`, `stats`): a PostgreSQL ledger is then opened
    /// without registering the station, so the read-only QA role can run them.
    public static func open(directory: String, readOnly: Bool = false) async throws -> Station {
        let config = try StationConfig.load(directory: directory)
        return Station(config: config, ledger: try await openLedger(config, readOnly: readOnly))
    }

    /// Opens the issuer for a profile: finds the profile and its CA, opens the CA key through the key guard.
    ///
    /// Any refusal (unknown profile, retired CA, key guard) is recorded as a `refused` audit event before it is
    /// thrown, so even a request that never reached a CSR leaves its trace.
    public func issuer(
        profile profileName: String?, passphraseFile: String?, operatorName: String, credentialsDirectory: String?,
        now: Date = Date()
    ) async throws -> Issuer {
        do {
            let profile = try config.profile(profileName)
            guard let caConfig = config.cas[profile.caName] else {
                throw KeylineError(.configuration, "profile '\(profile.name)' uses unknown CA '\(profile.caName)'")
            }
            let sources = PassphraseSources(
                explicitFile: passphraseFile, configuredFile: caConfig.passphraseFile,
                credentialsDirectory: credentialsDirectory, allowPrompt: true, caName: caConfig.name)
            let loaded = try CALoader.load(caConfig, passphrases: sources, now: now)
            return try Issuer(station: self, profile: profile, loaded: loaded, operatorName: operatorName)
        } catch let error as KeylineError {
            _ = try? await ledger.recordRefusal(cn: nil, reason: error.reason, operatorName: operatorName, at: now)
            throw error
        }
    }

    /// What every command warns about for this configuration (a CA key allowed to be unencrypted).
    public var warnings: [String] { config.warnings }

    /// Opens the configured ledger. A PostgreSQL ledger is not migrated here (the station's role may not change
    /// the schema): `migrate` is for `keyline ledger migrate`, run with the owner's role.
    public static func openLedger(
        _ config: StationConfig, create: Bool = false, migrate: Bool = false, readOnly: Bool = false,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws -> any Ledger {
        switch config.ledger {
        case .sqlite(let path): return try SQLiteLedger(path: path, stationID: config.stationID, create: create)
        case .postgres(let url):
            let options = try postgresOptions(url: url, settings: config.postgres, environment: environment)
            if readOnly && !migrate {
                return try await PostgresLedger.connect(options: options, stationID: config.stationID)
            }
            return try await PostgresLedger(options: options, stationID: config.stationID, migrate: migrate)
        }
    }

    /// Connection options for a `postgres://USER@HOST:PORT/DB` ledger URL with its password and TLS settings.
    public static func postgresOptions(
        url: String, settings: PostgresSettings,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> PostgresLedger.ConnectionOptions {
        let password = try postgresPassword(settings, environment: environment)
        var options = try PostgresLedger.ConnectionOptions.parse(url, password: password)
        let mode = PostgresTLS.Mode(rawValue: settings.sslMode.rawValue) ?? .verifyFull
        options.tls = try PostgresTLS.make(mode: mode, caFile: settings.caFile)
        options.connectionTLS = try PostgresTLS.makeConnection(mode: mode, caFile: settings.caFile)
        return options
    }

    /// The database password: `ledger_password_file` (guarded like a key's passphrase), else the systemd credential
    /// `keyline-ledger-password`, else none (peer or certificate authentication).
    static func postgresPassword(_ s: PostgresSettings, environment: [String: String]) throws -> String? {
        if let file = s.passwordFile {
            return String(decoding: try PassphraseSources.read(file, what: "ledger password file").bytes, as: UTF8.self)
        }
        if let dir = environment["CREDENTIALS_DIRECTORY"], !dir.isEmpty {
            let path = (dir as NSString).appendingPathComponent("keyline-ledger-password")
            if FileManager.default.fileExists(atPath: path) {
                return String(
                    decoding: try PassphraseSources.read(path, what: "systemd credential", allowGroupRead: true).bytes,
                    as: UTF8.self)
            }
        }
        return nil
    }
}

/// A CA ready to sign: its certificate material and its private key, opened through the key guard.
public struct LoadedCA: Sendable {
    public var ca: IssuingCA
    public var signer: Certificate.PrivateKey
}

/// Reading CA certificates and opening CA keys, with every check the key guard promises.
public enum CALoader {
    /// Reads a PEM file holding one or more certificates.
    public static func certificates(at path: String) throws -> [Certificate] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeylineError(.ioError, "cannot read certificate file \(path)")
        }
        let text = String(decoding: data, as: UTF8.self)
        let docs: [PEMDocument]
        do {
            docs = try PEMDocument.parseMultiple(pemString: text)
        } catch {
            throw KeylineError(.dataError, "\(path) is not a PEM certificate file")
        }
        let certs = try docs.filter { $0.discriminator == "CERTIFICATE" }.map { doc in
            do { return try Certificate(derEncoded: doc.derBytes) } catch {
                throw KeylineError(.dataError, "\(path) holds a certificate that cannot be parsed")
            }
        }
        guard !certs.isEmpty else { throw KeylineError(.dataError, "\(path) holds no CERTIFICATE block") }
        return certs
    }

    /// The CA's certificate and chain, without touching its key (for `ca show`, manifests, verification).
    public static func certificateOnly(_ c: CAConfig) throws -> IssuingCA {
        let certs = try certificates(at: c.cert)
        guard (try? certs[0].extensions.subjectKeyIdentifier) != nil else {
            throw KeylineError(
                .dataError,
                "CA '\(c.name)' certificate \(c.cert) has no subjectKeyIdentifier; leaves need it for their AKI")
        }
        var chain = Array(certs.dropFirst())
        if let chainPath = c.chain { chain += try certificates(at: chainPath) }
        return try IssuingCA(name: c.name, certificate: certs[0], chain: chain)
    }

    /// Opens a CA for signing at `now`: checks the key file guard, the passphrase, that the key matches the
    /// certificate and that the CA is valid. Every refusal is ``KeylineError/Code/keyGuard`` with the path and fix.
    public static func load(_ c: CAConfig, passphrases: PassphraseSources, now: Date) throws -> LoadedCA {
        guard c.status == .active else {
            throw KeylineError(
                .configuration,
                "CA '\(c.name)' is retired (status = \"retired\" in station.toml) and signs nothing more")
        }
        let ca = try certificateOnly(c)
        let verdict = IssuingCA.checkIsCA(ca.certificate)
        if case .refuse(_, let reason) = verdict {
            throw KeylineError(.dataError, "CA '\(c.name)' certificate \(c.cert): \(reason)")
        }
        let signer = try openKey(path: c.key, allowUnencrypted: c.allowUnencryptedKey, passphrases: passphrases)
        try checkMatch(signer, ca.certificate, keyPath: c.key, certPath: c.cert)
        if case .refuse(_, let reason) = ca.checkValidity(at: now) {
            throw KeylineError(.keyGuard, "\(reason) (\(c.cert)); import a valid CA or switch the profile")
        }
        return LoadedCA(ca: ca, signer: signer)
    }

    /// Opens a key file through the guard.
    public static func openKey(
        path: String, allowUnencrypted: Bool, passphrases: PassphraseSources
    ) throws -> Certificate.PrivateKey {
        let pem = try FileGuard.readSecretFile(path, what: "CA key")
        if PrivateKeyFile.protection(of: pem) == .unencrypted {
            guard allowUnencrypted else {
                throw KeylineError(
                    .keyGuard,
                    "CA key \(path) is not encrypted; encrypt it (openssl pkcs8 -topk8 -v2 aes-256-cbc) or set allow_unencrypted_key = true for development only"
                )
            }
            return try PrivateKeyFile.open(pem: pem, passphrase: nil, path: path)
        }
        return try PrivateKeyFile.open(pem: pem, passphrase: try passphrases.resolve(for: path), path: path)
    }

    /// Refuses a key that does not belong to the certificate.
    public static func checkMatch(
        _ key: Certificate.PrivateKey, _ cert: Certificate, keyPath: String, certPath: String
    ) throws {
        guard key.publicKey == cert.publicKey else {
            throw KeylineError(
                .keyGuard,
                "CA key \(keyPath) does not match certificate \(certPath); check which key belongs to this CA")
        }
    }
}
