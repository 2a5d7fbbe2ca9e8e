import ArgumentParser
import Crypto
import Foundation
import KeylineCore
import KeylineCustody
import KeylineLedger
import KeylineStation
import X509

struct ManifestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manifest",
        abstract: "Export what the backend takes: the CA's JITP registration and the device import manifest.",
        subcommands: [ManifestJITP.self, ManifestDevices.self, ManifestRevocations.self, ManifestVerify.self]
    )
}

struct ManifestJITP: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jitp",
        abstract: "The CA registration with its JITP settings, as the backend accepts it.",
        discussion: """
            Prints the backend's JSON body: certificate and verification_certificate (base64 of their PEM), \
            description, and the jitp object with exactly description, tags, product_name and, when set, cohort_prn \
            and target. For people, the CA's serial (decimal), SKI, fingerprint and validity go to stderr. \
            --format cli prints the equivalent --jitp-* flags of the backend's CLI instead.

            Refuses (exit 3, rule ca-validity) when the CA has expired or expires within the profile's \
            min_validity_days: devices signed by it could not use their certificates long enough.

            Example:
              keyline ca verification-cert CODE --out verification.pem
              keyline manifest jitp --profile line1 --verification-cert verification.pem > ca-registration.json
            """
    )

    @OptionGroup var options: StationOptions
    @Option(name: .long, help: "Profile whose CA and JITP settings to export (default: 'default').") var profile:
        String?
    @Option(
        name: .long,
        help: ArgumentHelp("The verification certificate (PEM) from 'keyline ca verification-cert'.", valueName: "FILE")
    )
    var verificationCert: String?
    @Option(name: .long, help: "json (the API body) or cli (the backend CLI's flags).") var format: String = "json"
    @Option(name: .long, help: "The CA registration's own description (default: names the CA and the station).")
    var description: String?
    @Option(name: .long, help: ArgumentHelp("Write to FILE instead of standard output.", valueName: "FILE")) var out:
        String?

    func validate() throws {
        guard ["json", "cli"].contains(format) else { throw ValidationError("--format must be json or cli") }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation()
            let p = try station.config.profile(profile)
            let caConfig = station.config.cas[p.caName]!
            let ca = try CALoader.certificateOnly(caConfig)
            let now = Date()
            let days = ca.daysLeft(at: now)
            if days < 0 || days < p.minValidityDays {
                throw KeylineError.refused(
                    "ca-validity",
                    days < 0
                        ? "CA '\(ca.name)' expired on \(Timestamp.iso(ca.certificate.notValidAfter)); the backend refuses it"
                        : "CA '\(ca.name)' expires in \(days) days, within profile '\(p.name)' min_validity_days (\(p.minValidityDays))"
                )
            }
            var verificationPEM: String?
            if let path = verificationCert {
                let cert = try CALoader.certificates(at: path)[0]
                guard ca.certificate.publicKey.isValidSignature(cert.signature, for: cert),
                    cert.issuer == ca.certificate.subject
                else {
                    throw KeylineError(.dataError, "\(path) was not signed by CA '\(ca.name)'")
                }
                verificationPEM = try cert.serializeAsPEM().pemString + "\n"
            } else {
                Console.warn(
                    "no --verification-cert: the backend needs one to register a new CA (keyline ca verification-cert CODE)"
                )
            }
            let caPEM = try ca.certificate.serializeAsPEM().pemString + "\n"
            let text =
                description
                ?? "Keyline CA '\(ca.name)' (\(ca.certificate.subject)) at station \(station.config.stationID)"
            let registration = try JITPRegistration(
                caPEM: caPEM, verificationPEM: verificationPEM, description: text, settings: p.jitp, profile: p.name)
            Console.note(
                """
                CA '\(ca.name)': serial \(DecimalText.string(ca.certificate.serialNumber.bytes)) (decimal), \
                SKI \(Hex.upper(ca.subjectKeyIdentifier)), SHA-256 \(ca.fingerprint), \
                valid \(Timestamp.iso(ca.certificate.notValidBefore)) .. \(Timestamp.iso(ca.certificate.notValidAfter))
                """)
            let output: String
            if format == "cli" {
                output = registration.cliFlags.joined(separator: " \\\n  ") + "\n"
            } else {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                output = String(decoding: try encoder.encode(registration), as: UTF8.self) + "\n"
            }
            if let out { try SafeFile.write(output, to: out) } else { Console.out(output) }
        }
    }
}

struct ManifestDevices: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "Export devices from the ledger as the backend's Device Import Manifest (or JSON with audit fields).",
        discussion: """
            csv is the backend's import format exactly: the header identifier,description,tags,product_prn,\
            cohort_prn,certificates,target, every field quoted, tags comma-joined inside their field, the device \
            certificate as PEM. json and jsonl add the audit fields (seq, serial, fingerprint, AKI, validity, station, \
            operator, hardware id, times). Descriptions are each profile's description_template rendered per device.

            Exports issued and delivered certificates unless --state says otherwise. The export streams (memory \
            stays flat), is recorded as a ledger event, and gets FILE.summary.json (rows, sequence range, ledger \
            head, SHA-256) signed by the station's key in FILE.sig: check both with 'keyline manifest verify FILE'.
            """
    )

    @OptionGroup var options: StationOptions
    @Option(name: .long, help: "Only certificates issued under this profile.") var profile: String?
    @Option(name: .long, help: "Only certificates of this work order.") var workOrder: String?
    @Option(name: .long, help: "Only certificates in this state (issued, delivered, failed, revoked).") var state:
        String?
    @Option(name: .long, help: ArgumentHelp("Only certificates issued at or after TIME (ISO 8601).", valueName: "TIME"))
    var since: String?
    @Option(name: .long, help: ArgumentHelp("Only certificates after ledger sequence N.", valueName: "N")) var sinceSeq:
        Int64?
    @Option(name: .long, help: "csv, json or jsonl.") var format: String = "csv"
    @Option(
        name: .long, help: ArgumentHelp("Where to write (default: DIR/exports/devices-TIME.FORMAT).", valueName: "FILE")
    )
    var out: String?

    func validate() throws {
        guard ManifestFormat(rawValue: format) != nil else {
            throw ValidationError("--format must be csv, json or jsonl")
        }
        if since != nil && sinceSeq != nil { throw ValidationError("give --since or --since-seq, not both") }
        if let since, Timestamp.parse(since) == nil {
            throw ValidationError("--since '\(since)' is not an ISO 8601 time")
        }
        if let state, RecordState(rawValue: state) == nil {
            throw ValidationError(
                "--state must be one of \(RecordState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation()
            if let profile, station.config.profiles[profile] == nil {
                // Records keep the attributes they were issued with, so a profile removed since can still be exported.
                Console.warn(
                    "profile '\(profile)' is not in station.toml; selecting the ledger's records issued under it")
            }
            let now = Date()
            let path: String
            if let out {
                path = out
            } else {
                let dir = "\(station.config.directory)/exports"
                try createDirectory(dir)
                let stamp = Timestamp.isoMillis(now).replacingOccurrences(of: ":", with: "").replacingOccurrences(
                    of: "-", with: "")
                path = "\(dir)/devices-\(stamp).\(format)"
            }
            // An export is evidence: never replace one silently.
            for existing in [
                path, ManifestSignature.summaryPath(path), ManifestSignature.signaturePath(path),
                ManifestSignature.checkpointPath(path),
            ]
            where FileManager.default.fileExists(atPath: existing) {
                throw KeylineError(
                    .ioError, "\(existing) already exists; choose another --out or move the old export away")
            }
            let query = RecordQuery(
                afterSeq: sinceSeq, state: state.flatMap(RecordState.init(rawValue:)), profile: profile,
                workOrder: workOrder,
                createdSince: since.flatMap(Timestamp.parse))
            let exporter = DeviceManifestExporter(
                station: station, format: ManifestFormat(rawValue: format)!, query: query)
            let summary = try await exporter.export(to: path, now: now)
            let range = ExportSummary.rangeText(summary.first_seq, summary.last_seq)
            Console.note(
                "exported \(summary.rows) device(s) to \(path) (\(range), SHA-256 \(summary.sha256)); signed summary in \(ManifestSignature.summaryPath(path))"
            )
        }
    }
}

struct ManifestRevocations: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revocations",
        abstract: "List the certificates revoked here, for deactivating them in the backend.",
        discussion: """
            One row per revocation, oldest first: identifier, certificate SHA-256 fingerprint, serial, CA, reason, \
            note, time, ledger and event sequence numbers. CSV (every field quoted) or JSON; standard output unless \
            --out names a file (never replaced). --since limits it to revocations at or after TIME.

            Examples:
              keyline manifest revocations --since 2026-11-01
              keyline manifest revocations --format json --out revoked-2026-11.json
            """)

    @OptionGroup var options: StationOptions
    @Option(name: .long, help: ArgumentHelp("Only revocations at or after TIME (ISO 8601).", valueName: "TIME"))
    var since: String?
    @Option(name: .long, help: "csv or json.") var format = "csv"
    @Option(name: .long, help: ArgumentHelp("Write to FILE instead of standard output.", valueName: "FILE")) var out:
        String?

    func validate() throws {
        guard ["csv", "json"].contains(format) else { throw ValidationError("--format must be csv or json") }
        if let since { _ = try LedgerSearch.time(since, "--since") }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation()
            if let out, FileManager.default.fileExists(atPath: out) {
                throw KeylineError(.ioError, "\(out) already exists; choose another --out or move the old one away")
            }
            let rows = try await Revocation.rows(
                station: station, since: try since.map { try LedgerSearch.time($0, "--since") })
            var text = ""
            if format == "json" {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                text = String(decoding: try encoder.encode(["revocations": rows]), as: UTF8.self) + "\n"
            } else {
                func q(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
                text =
                    [
                        "identifier", "fingerprint", "serial", "ca", "reason", "note", "revoked_at", "ledger_seq",
                        "event_seq",
                    ]
                    .map(q).joined(separator: ",") + "\n"
                for r in rows {
                    text +=
                        [
                            r.identifier, r.fingerprint, r.serial, r.ca, r.reason, r.note ?? "", r.revoked_at,
                            String(r.ledger_seq), String(r.event_seq),
                        ].map(q).joined(separator: ",") + "\n"
                }
            }
            if let out {
                try SafeFile.write(text, to: out, exclusive: true)
                Console.note("\(rows.count) revocation(s) written to \(out)")
            } else {
                Console.out(text)
                Console.note("\(rows.count) revocation(s)")
            }
        }
    }
}

struct ManifestVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check an exported manifest against its signed summary.",
        discussion: """
            Verifies FILE.sig over FILE.summary.json with the station's public key (station-signing.pem, or \
            --public-key), then FILE's SHA-256 and size against the summary. Exit 0 when both hold, 4 when the file \
            or its summary was changed.
            """
    )

    @OptionGroup var options: StationOptions
    @Argument(help: "The exported manifest.") var file: String
    @Option(
        name: .long, help: ArgumentHelp("The station's public key (PEM); default: the station's own.", valueName: "PEM")
    )
    var publicKey: String?

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let keyPath: String
            if let publicKey {
                keyPath = publicKey
            } else {
                keyPath = "\(Station.locate(explicit: options.station))/\(StationSigningKey.publicPath)"
            }
            let summary = try ManifestSignature.verify(
                file: file, publicKey: try StationSigningKey.publicKey(at: keyPath))
            Console.out(
                "manifest OK: \(summary.rows) row(s), \(ExportSummary.rangeText(summary.first_seq, summary.last_seq)), station \(summary.station_id), exported \(summary.created_at)\n"
            )
        }
    }
}
