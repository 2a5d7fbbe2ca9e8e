import Crypto
import Foundation
import KeylineCore
import KeylineCustody
import KeylineLedger
import SwiftASN1
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// `keyline init` and `keyline ca import`: making a station and adding CAs to it.
public enum StationSetup {
    /// What `init` made, for the summary it prints.
    public struct InitResult: Sendable {
        public var directory: String
        public var stationID: String
        public var caFingerprint: String
        public var caNotAfter: Date
    }

    /// Creates a working station in `directory`: config, a development CA `dev` (P-256 root + issuing
    /// intermediate, pathlen 0), its key as encrypted PKCS#8 with a random passphrase, a `default` profile and an
    /// empty ledger. Refuses (usage, 64) when `directory` already holds a station; touches nothing then.
    public static func initialize(directory: String, now: Date = Date()) async throws -> InitResult {
        let fm = FileManager.default
        let dir = (directory as NSString).standardizingPath
        let configPath = (dir as NSString).appendingPathComponent(StationConfig.fileName)
        for existing in [configPath, (dir as NSString).appendingPathComponent("ledger.sqlite")]
        where fm.fileExists(atPath: existing) {
            throw KeylineError(.usage, "\(dir) is already a station (\(existing) exists); refusing to touch it")
        }
        let caDir = (dir as NSString).appendingPathComponent("ca/dev")
        let secretsDir = (dir as NSString).appendingPathComponent("secrets")
        do {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try fm.createDirectory(
                atPath: caDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            try fm.createDirectory(
                atPath: secretsDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            chmod((dir as NSString).appendingPathComponent("ca"), 0o755)
            chmod(dir, 0o755)
        } catch {
            throw KeylineError(.ioError, "cannot create station directories in \(dir): \(error.localizedDescription)")
        }
        let stationID = UUID().uuidString.lowercased()
        let dev = try DevCA.make(stationID: stationID, now: now)
        let passphrase = Passphrase(bytes: PassphraseSources.generate(), source: "new passphrase")
        let encryptedKey = try PrivateKeyFile.encryptedPEM(pkcs8: try dev.issuingKey.pkcs8DER, passphrase: passphrase)

        try SafeFile.write(
            Array(passphrase.bytes) + [UInt8(ascii: "\n")], to: "\(secretsDir)/dev.passphrase", mode: 0o600,
            exclusive: true)
        try SafeFile.write(encryptedKey, to: "\(caDir)/ca.key", mode: 0o600, exclusive: true)
        try SafeFile.write(try dev.issuing.serializeAsPEM().pemString + "\n", to: "\(caDir)/ca.pem", exclusive: true)
        try SafeFile.write(try dev.root.serializeAsPEM().pemString + "\n", to: "\(caDir)/root.pem", exclusive: true)

        try StationSigningKey.create(in: dir)
        let config = StationTemplate.render(stationID: stationID)
        // Parse what we are about to write, so a template mistake can never produce a broken station.
        _ = try StationConfig.parse(config, directory: dir)
        let ledgerPath = (dir as NSString).appendingPathComponent("ledger.sqlite")
        let ledger = try SQLiteLedger(path: ledgerPath, stationID: stationID, create: true)
        // Readable by the station's group (QA), writable by the station's user only.
        chmod(ledgerPath, 0o640)
        try SafeFile.write(config, to: configPath, mode: 0o644, exclusive: true)
        let issuing = try IssuingCA(name: "dev", certificate: dev.issuing, chain: [dev.root])
        let event = EventContent(
            kind: .stationInitialized, recordSeq: nil, cn: nil, detail: "development CA 'dev' \(issuing.fingerprint)",
            stationID: stationID, operatorName: "", at: now)
        try await ledger.appendEvent(event)
        return InitResult(
            directory: dir, stationID: stationID, caFingerprint: issuing.fingerprint,
            caNotAfter: dev.issuing.notValidAfter)
    }

    /// What `ca import` checked and wrote.
    public struct ImportResult: Sendable {
        public var name: String
        public var fingerprint: String
    }

    /// Imports a CA made elsewhere into `station`: checks it, copies its files under `ca/NAME/` and appends a
    /// `[cas.NAME]` section to `station.toml`.
    public static func importCA(
        station: Station, name: String, certPath: String, keyPath: String, chainPath: String?, passphraseFile: String?,
        allowUnencrypted: Bool, now: Date = Date()
    ) async throws -> ImportResult {
        guard name.range(of: "^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$", options: .regularExpression) != nil else {
            throw KeylineError(.usage, "CA name '\(name)' must be 1-32 letters, digits, '-' or '_'")
        }
        guard station.config.cas[name] == nil else {
            throw KeylineError(.usage, "a CA named '\(name)' already exists in station.toml")
        }
        let certs = try CALoader.certificates(at: certPath)
        let cert = certs[0]
        if case .refuse(_, let reason) = IssuingCA.checkIsCA(cert) {
            throw KeylineError(.dataError, "\(certPath) is not a usable CA certificate: \(reason)")
        }
        var chain = Array(certs.dropFirst())
        if let chainPath { chain += try CALoader.certificates(at: chainPath) }
        let absPassFile = passphraseFile.map { ($0 as NSString).standardizingPath }.map {
            $0.hasPrefix("/") ? $0 : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent($0)
        }
        let key = try CALoader.openKey(
            path: keyPath, allowUnencrypted: allowUnencrypted,
            passphrases: PassphraseSources(
                explicitFile: absPassFile,
                credentialsDirectory: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"],
                allowPrompt: true, caName: name))
        try CALoader.checkMatch(key, cert, keyPath: keyPath, certPath: certPath)
        let issuing = try IssuingCA(name: name, certificate: cert, chain: chain)
        if case .refuse(_, let reason) = issuing.checkValidity(at: now) {
            throw KeylineError(.keyGuard, "\(reason) (\(certPath)); refusing to import it")
        }

        let dir = station.config.directory
        let caDir = "\(dir)/ca/\(name)"
        do {
            try FileManager.default.createDirectory(
                atPath: caDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw KeylineError(.ioError, "cannot create \(caDir): \(error.localizedDescription)")
        }
        let keyBytes = try FileGuard.readSecretFile(keyPath, what: "CA key")
        try SafeFile.write(keyBytes, to: "\(caDir)/ca.key", mode: 0o600, exclusive: true)
        try SafeFile.write(try cert.serializeAsPEM().pemString + "\n", to: "\(caDir)/ca.pem", exclusive: true)
        var section = "\n[cas.\(name)]\n# Imported \(Timestamp.iso(now)); SHA-256 \(issuing.fingerprint)\n"
        section += "cert = \"ca/\(name)/ca.pem\"\nkey = \"ca/\(name)/ca.key\"\n"
        if !chain.isEmpty {
            try SafeFile.write(
                try chain.map { try $0.serializeAsPEM().pemString }.joined(separator: "\n") + "\n",
                to: "\(caDir)/chain.pem", exclusive: true)
            section += "chain = \"ca/\(name)/chain.pem\"\n"
        }
        if let absPassFile { section += "passphrase_file = \"\(absPassFile)\"\n" }
        section += "status = \"active\"\n"
        if allowUnencrypted && PrivateKeyFile.protection(of: keyBytes) == .unencrypted {
            section += "allow_unencrypted_key = true  # development only: every command warns\n"
        }
        let configPath = "\(dir)/\(StationConfig.fileName)"
        guard let old = FileManager.default.contents(atPath: configPath) else {
            throw KeylineError(.ioError, "cannot read \(configPath)")
        }
        var text = String(decoding: old, as: UTF8.self)
        if !text.hasSuffix("\n") { text += "\n" }
        text += section
        _ = try StationConfig.parse(text, directory: dir)
        try SafeFile.write(text, to: configPath)
        try await station.ledger.appendEvent(
            EventContent(
                kind: .caImported, recordSeq: nil, cn: nil, detail: "CA '\(name)' \(issuing.fingerprint)",
                stationID: station.config.stationID, operatorName: "", at: now))
        return ImportResult(name: name, fingerprint: issuing.fingerprint)
    }
}

/// The development CA `keyline init` makes: a P-256 root and an issuing intermediate with pathlen 0.
enum DevCA {
    struct Material {
        var root: Certificate
        var issuing: Certificate
        var issuingKey: Certificate.PrivateKey
    }

    static func make(stationID: String, now: Date) throws -> Material {
        let rootKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let issuingKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let start = now.addingTimeInterval(-3600)
        let short = String(stationID.prefix(8))
        let rootName = try DistinguishedName {
            OrganizationName("Keyline development")
            CommonName("Keyline Dev Root \(short)")
        }
        let issuingName = try DistinguishedName {
            OrganizationName("Keyline development")
            CommonName("Keyline Dev Issuing CA \(short)")
        }
        var rng = SystemRandomNumberGenerator()
        func serial() throws -> Certificate.SerialNumber {
            try CertificateFactory.serial(fromRandom: (0..<20).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
        let root = try CertificateFactory.caCertificate(
            subject: rootName, publicKey: rootKey.publicKey, pathLength: nil, notBefore: start,
            notAfter: start.addingTimeInterval(20 * 365.25 * 86400), serial: try serial(), issuer: nil, selfKey: rootKey
        )
        let issuing = try CertificateFactory.caCertificate(
            subject: issuingName, publicKey: issuingKey.publicKey, pathLength: 0, notBefore: start,
            notAfter: start.addingTimeInterval(10 * 365.25 * 86400), serial: try serial(), issuer: (root, rootKey),
            selfKey: issuingKey)
        return Material(root: root, issuing: issuing, issuingKey: issuingKey)
    }
}
