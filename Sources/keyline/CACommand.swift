import ArgumentParser
import Crypto
import Foundation
import KeylineCore
import KeylineCustody
import KeylineLedger
import KeylineStation
import X509

struct CACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Import and inspect the station's CAs.",
        subcommands: [CAList.self, CAShow.self, CAImport.self, CAVerificationCert.self]
    )
}

struct CAImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Import a production CA made elsewhere (certificate + key).",
        discussion: """
            Accepts what openssl writes: encrypted PKCS#8 (PBES2 with PBKDF2 or scrypt), legacy encrypted PEM \
            (Proc-Type: 4,ENCRYPTED), SEC1 keys with an EC PARAMETERS block, and unencrypted PKCS#8 (refused unless \
            --allow-unencrypted-key, for development). Checks the key matches the certificate, the certificate is a \
            CA (CA:TRUE with pathlen:0, keyCertSign, SKI) and is inside its validity. The files are copied under ca/NAME/ and a \
            [cas.NAME] section is appended to station.toml; point a profile at it with `ca = "NAME"`.

            The passphrase is read from --passphrase-file (mode 0600), the systemd credential \
            keyline-ca-passphrase, or a prompt on a terminal; never from the command line.
            """
    )

    @OptionGroup var options: StationOptions
    @Option(name: .long, help: "Name for the CA in station.toml.") var name: String
    @Option(name: .long, help: ArgumentHelp("The issuing CA certificate (PEM).", valueName: "CA.pem")) var cert: String
    @Option(name: .long, help: ArgumentHelp("The CA private key (PEM).", valueName: "KEY.pem")) var key: String
    @Option(name: .long, help: ArgumentHelp("Certificates above the CA (PEM), nearest first.", valueName: "ROOT.pem"))
    var chain: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "File holding the key's passphrase (mode 0600); recorded in station.toml.", valueName: "FILE"))
    var passphraseFile: String?
    @Flag(name: .long, help: "Accept an unencrypted key (development only; every command will warn).")
    var allowUnencryptedKey = false

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation()
            let result: StationSetup.ImportResult
            do {
                result = try await StationSetup.importCA(
                    station: station, name: name, certPath: cert, keyPath: key, chainPath: chain,
                    passphraseFile: passphraseFile, allowUnencrypted: allowUnencryptedKey)
            } catch let error as KeylineError {
                _ = try? await station.ledger.recordRefusal(
                    cn: nil, reason: "ca import '\(name)': \(error.reason)",
                    operatorName: station.config.operatorName(option: nil),
                    at: Date())
                throw error
            }
            Console.out("Imported CA '\(result.name)' SHA-256 \(result.fingerprint)\n")
        }
    }
}

struct CAShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Show each CA's subject, SKI, fingerprint, validity and days left.",
        discussion:
            "Warns on stderr when an active CA can issue for fewer than ca_expiry_warning_days (default 30) more days (its days left minus the largest min_validity_days of the profiles using it), and when a CA certificate is unfit to issue. Does not open keys."
    )

    @OptionGroup var options: StationOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    struct Entry: Encodable {
        var name: String
        var status: String
        var subject: String
        var issuer: String
        var ski: String
        var fingerprint: String
        var serial: String
        var not_before: Date
        var not_after: Date
        var days_left: Int
        /// Days left in which the CA can still give every profile using it its min_validity_days.
        @Nullable var issuing_days_left: Int?
        @Nullable var warning: String?
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let config = try StationConfig.load(directory: Station.locate(explicit: options.station))
            config.warnings.forEach(Console.warn)
            let now = Date()
            var entries: [Entry] = []
            for name in config.cas.keys.sorted() {
                let c = config.cas[name]!
                let ca = try CALoader.certificateOnly(c)
                let health = CAHealth(
                    ca: ca, active: c.status == .active,
                    profileMinValidityDays: config.profiles.values.filter { $0.caName == name }.map(\.minValidityDays),
                    warningDays: config.caExpiryWarningDays, now: now)
                entries.append(
                    Entry(
                        name: name, status: c.status.rawValue, subject: ca.certificate.subject.description,
                        issuer: ca.certificate.issuer.description, ski: Hex.upper(ca.subjectKeyIdentifier),
                        fingerprint: ca.fingerprint, serial: Hex.upper(ca.certificate.serialNumber.bytes),
                        not_before: ca.certificate.notValidBefore, not_after: ca.certificate.notValidAfter,
                        days_left: health.daysLeft, issuing_days_left: health.issuingDaysLeft, warning: health.warning))
            }
            for e in entries { if let w = e.warning { Console.warn(w) } }
            if json {
                try Console.json(["cas": entries])
                return
            }
            for e in entries {
                Console.out(
                    """
                    \(e.name) (\(e.status))
                      subject      \(e.subject)
                      issuer       \(e.issuer)
                      SKI          \(e.ski)
                      SHA-256      \(e.fingerprint)
                      serial       \(e.serial)
                      valid        \(Timestamp.iso(e.not_before)) .. \(Timestamp.iso(e.not_after))
                      days left    \(e.days_left)\(e.issuing_days_left.map { " (can issue for \($0) more)" } ?? "")

                    """)
            }
        }
    }
}

struct CAList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "One line per CA: status, profiles using it, expiry, fingerprint.")

    @OptionGroup var options: StationOptions

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let config = try options.loadConfig()
            var rows: [[String]] = []
            for name in config.cas.keys.sorted() {
                let c = config.cas[name]!
                let ca = try CALoader.certificateOnly(c)
                let users = config.profiles.values.filter { $0.caName == name }.map(\.name).sorted()
                rows.append([
                    name, c.status.rawValue, users.isEmpty ? "-" : users.joined(separator: ","),
                    Timestamp.iso(ca.certificate.notValidAfter), ca.fingerprint,
                ])
            }
            Console.out(Table.render(["CA", "STATUS", "PROFILES", "NOT AFTER", "SHA-256"], rows))
        }
    }
}

struct CAVerificationCert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verification-cert",
        abstract: "Make the verification certificate the backend asks for when a CA is registered.",
        discussion: """
            The backend hands out a verification code; this signs an end-entity certificate whose subject CN is \
            exactly that code with the CA's key (for a throwaway key), valid for --days (default 7). It proves the \
            registrant holds the CA key. It is recorded in the ledger as an event, never as a device.

            Example:
              keyline ca verification-cert 5d3f0c2a9b --ca factory-2026 --out verification.pem
            """
    )

    @OptionGroup var options: StationOptions
    @Argument(help: "The verification code from the backend.") var code: String
    @Option(name: .long, help: "The CA (default: the CA of profile 'default').") var ca: String?
    @Option(name: .long, help: ArgumentHelp("Where to write the certificate (PEM).", valueName: "FILE")) var out: String
    @Option(name: .long, help: "Validity in days (1-30).") var days: Int = 7
    @Option(name: .long, help: ArgumentHelp("File holding the CA key's passphrase (mode 0600).", valueName: "FILE"))
    var passphraseFile: String?
    @Option(name: .long, help: "Operator recorded with the event.") var `operator`: String?

    func validate() throws {
        guard (1...30).contains(days) else { throw ValidationError("--days must be 1...30") }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation()
            let operatorName = station.config.operatorName(option: `operator`)
            let caName = try ca ?? station.config.profile(nil).caName
            let now = Date()
            do {
                if case .refuse(let rule, let reason) = try CNRule(pattern: ".+").check(code) {
                    throw KeylineError.refused(rule, "verification code: " + reason)
                }
                guard let caConfig = station.config.cas[caName] else {
                    throw KeylineError(.configuration, "no CA '\(caName)' in station.toml")
                }
                let loaded = try CALoader.load(
                    caConfig,
                    passphrases: PassphraseSources(
                        explicitFile: passphraseFile, configuredFile: caConfig.passphraseFile,
                        credentialsDirectory: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"],
                        allowPrompt: true, caName: caName),
                    now: now)
                var random = SystemRandomNumberGenerator()
                let serial = try CertificateFactory.serial(
                    fromRandom: (0..<20).map { _ in UInt8.random(in: 0...255, using: &random) })
                let cert = try CertificateFactory.verificationCertificate(
                    code: code, publicKey: Certificate.PublicKey(P256.Signing.PrivateKey().publicKey), ca: loaded.ca,
                    signer: loaded.signer, serial: serial, now: now, validity: Double(days) * 86400)
                let der = try CertificateFactory.der(cert)
                // Recorded before the certificate leaves the station, like every certificate.
                try await station.ledger.appendEvent(
                    EventContent(
                        kind: .verificationCertificate, recordSeq: nil, cn: code,
                        detail: "CA '\(caName)' serial \(Hex.upper(serial.bytes)) SHA-256 \(Hex.sha256(der))",
                        stationID: station.config.stationID, operatorName: operatorName, at: now))
                try SafeFile.write(PEMText.encode(der), to: out)
                Console.note("verification certificate for code '\(code)' signed by CA '\(caName)' written to \(out)")
            } catch let error as KeylineError {
                _ = try? await station.ledger.recordRefusal(
                    cn: nil, reason: "verification-cert: \(error.reason)", operatorName: operatorName, at: now)
                throw error
            }
        }
    }
}

/// Opens the issuer for a profile (see ``Station/issuer(profile:passphraseFile:operatorName:credentialsDirectory:now:)``).
func openIssuer(
    station: Station, profileName: String?, passphraseFile: String?, operatorOption: String?
) async throws -> Issuer {
    try await station.issuer(
        profile: profileName, passphraseFile: passphraseFile,
        operatorName: station.config.operatorName(option: operatorOption),
        credentialsDirectory: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"])
}
