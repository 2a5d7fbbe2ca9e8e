import ArgumentParser
import Foundation
import KeylineCore
import KeylineCustody
import KeylineStation
import X509

struct CACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Import and inspect the station's CAs.",
        subcommands: [CAImport.self, CAShow.self]
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
            CA (CA:TRUE, keyCertSign, SKI) and is inside its validity. The files are copied under ca/NAME/ and a \
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
            let station = try options.openStation()
            let result: StationSetup.ImportResult
            do {
                result = try await StationSetup.importCA(
                    station: station, name: name, certPath: cert, keyPath: key, chainPath: chain,
                    passphraseFile: passphraseFile, allowUnencrypted: allowUnencryptedKey)
            } catch let error as KeylineError {
                _ = try? await station.ledger.recordRefusal(
                    cn: nil, reason: "ca import '\(name)': \(error.reason)",
                    operatorName: resolveOperator(nil, config: station.config),
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
            "Warns on stderr when a CA has fewer days left than ca_expiry_warning_days (default 30). Does not open keys."
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
        var issuing_days_left: Int
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
                let days = ca.daysLeft(at: now)
                // A CA stops being useful min_validity_days before it expires: profiles refuse from then on.
                let minValidity = config.profiles.values.filter { $0.caName == name }.map(\.minValidityDays).max() ?? 0
                let issuingDays = days - minValidity
                var warning: String?
                if days < 0 {
                    warning = "CA '\(name)' has expired"
                } else if issuingDays < config.caExpiryWarningDays {
                    warning =
                        issuingDays <= 0
                        ? "CA '\(name)' can no longer meet min_validity_days (\(minValidity)) of its profiles: issuance under it is refused"
                        : "CA '\(name)' can issue for \(issuingDays) more days (expires in \(days), profiles need \(minValidity) days of validity)"
                }
                entries.append(
                    Entry(
                        name: name, status: c.status.rawValue, subject: ca.certificate.subject.description,
                        issuer: ca.certificate.issuer.description, ski: Hex.upper(ca.subjectKeyIdentifier),
                        fingerprint: ca.fingerprint, serial: Hex.upper(ca.certificate.serialNumber.bytes),
                        not_before: ca.certificate.notValidBefore, not_after: ca.certificate.notValidAfter,
                        days_left: days, issuing_days_left: issuingDays, warning: warning))
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
                      days left    \(e.days_left) (can issue for \(e.issuing_days_left) more)

                    """)
            }
        }
    }
}

/// Opens the issuer for a profile; a key-guard refusal is recorded as an audit event before it is reported.
func openIssuer(
    station: Station, profileName: String?, passphraseFile: String?, operatorOption: String?
) async throws -> Issuer {
    let operatorName = resolveOperator(operatorOption, config: station.config)
    let profile = try station.config.profile(profileName)
    guard let caConfig = station.config.cas[profile.caName] else {
        throw KeylineError(.configuration, "profile '\(profile.name)' uses unknown CA '\(profile.caName)'")
    }
    let sources = PassphraseSources(
        explicitFile: passphraseFile, configuredFile: caConfig.passphraseFile,
        credentialsDirectory: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"], allowPrompt: true)
    do {
        let loaded = try CALoader.load(caConfig, passphrases: sources, now: Date())
        return try Issuer(station: station, profile: profile, loaded: loaded, operatorName: operatorName)
    } catch let error as KeylineError {
        _ = try? await station.ledger.recordRefusal(
            cn: nil, reason: error.reason, operatorName: operatorName, at: Date())
        throw error
    }
}

/// `--operator`, else `KEYLINE_OPERATOR`, else `operator` in station.toml, else the login name.
func resolveOperator(_ option: String?, config: StationConfig) -> String {
    if let option, !option.isEmpty { return option }
    let env = ProcessInfo.processInfo.environment
    if let value = env["KEYLINE_OPERATOR"], !value.isEmpty { return value }
    if let value = config.operatorName { return value }
    return env["USER"] ?? env["LOGNAME"] ?? "unknown"
}
