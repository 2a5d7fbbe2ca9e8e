import ArgumentParser
import Foundation
import KeylineCore
import KeylineCustody
import KeylineLedger
import KeylineStation

struct LedgerRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke",
        abstract: "Revoke a device's certificate in the ledger (rework, scrap, compromise).",
        discussion: """
            Marks the latest record of CN revoked and appends a 'revoked' event with the reason, the note and the \
            operator. Revoked is final. Then export what the backend must deactivate with \
            'keyline manifest revocations'. A reworked device is issued a new certificate under the same CN only \
            with 'keyline sign --reissue' or 'keyline issue --reissue', which the ledger records.

            Exit 65 when the CN was never issued or is already revoked; the ledger is then unchanged.

            Examples:
              keyline ledger revoke SN-000123 --reason rework --note "RMA 4471, board replaced"
              keyline ledger revoke SN-000124 --reason scrap
            """)

    @OptionGroup var options: StationOptions
    @Argument(help: "The certificate's CN (the device identifier).") var cn: String
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Why: \(RevocationReason.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "REASON"))
    var reason: String
    @Option(name: .long, help: "A one-line note for the record (at most 200 characters).") var note: String?
    @Option(name: .long, help: "Operator recorded with the revocation.") var `operator`: String?
    @Flag(name: .long, help: "Print the record as JSON.") var json = false

    func validate() throws {
        guard RevocationReason(rawValue: reason) != nil else {
            throw ValidationError(
                "--reason must be one of \(RevocationReason.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation()
            let record = try await Revocation.revoke(
                station: station, cn: cn, reason: RevocationReason(rawValue: reason)!, note: note,
                operatorName: station.config.operatorName(option: `operator`))
            if json {
                try Console.json(["record": RecordJSON(record)])
            } else {
                Console.out(
                    "revoked \(cn) (ledger seq \(record.seq), serial \(record.content.serialHex)), reason \(reason)\n")
            }
            Console.note("deactivate it in the backend: keyline manifest revocations")
        }
    }
}

struct LedgerCheckpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Write the ledger's heads, signed by the station key, for QA to keep outside the station.",
        discussion: """
            The hash chain shows edits in the middle of the ledger; a checkpoint kept elsewhere also shows that the \
            newest records were removed. It holds the last record's and the last event's sequence number and hash, \
            the time, and the station key's signature; 'keyline ledger verify --checkpoint FILE' proves later that \
            the ledger still holds everything it covered. Every manifest export writes one beside it too \
            (FILE.checkpoint). A 'checkpoint' event records each one.

            Examples:
              keyline ledger checkpoint --out /mnt/qa/line-1-2026-11-29.checkpoint
              keyline ledger verify --checkpoint /mnt/qa/line-1-2026-11-29.checkpoint --public-key qa/line-1.pem
            """)

    @OptionGroup var options: StationOptions
    @Option(
        name: .long, help: ArgumentHelp("Write to FILE (never replaced) instead of standard output.", valueName: "FILE")
    )
    var out: String?

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation()
            if let out, FileManager.default.fileExists(atPath: out) {
                throw KeylineError(.ioError, "\(out) already exists; a checkpoint is evidence and is never replaced")
            }
            let made = try await LedgerCheckpoint.make(station: station)
            if let out {
                try SafeFile.write(made.text, to: out, exclusive: true)
            } else {
                Console.out(made.text)
            }
            try await LedgerCheckpoint.recordEvent(
                station: station, checkpoint: made.checkpoint, operatorName: station.config.operatorName(option: nil))
            if let out {
                Console.note(
                    "checkpoint: records 1–\(made.checkpoint.recordsSeq), events 1–\(made.checkpoint.eventsSeq), written to \(out)"
                )
            }
        }
    }
}

struct LedgerReconcile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reconcile",
        abstract: "Compare the ledger with what the backend knows; report every difference.",
        discussion: """
            EXPORT is the backend's view of the devices: its device import manifest CSV \
            (identifier,description,tags,product_prn,cohort_prn,certificates,target; column order free), or JSON: an \
            array of devices, or one device per line, each with 'identifier', 'product_prn' or 'product_name', \
            'cohort_prn', 'tags' and 'certificates' (PEM text or SHA-256 fingerprints). 'quarantined': true, or \
            'status' of deactivated/inactive/quarantined, marks a device not active.

            Every device and every ledger record in scope is sorted into: matched; not issued here (ALARM: an \
            unknown identifier, or a certificate under one of this station's CAs that the ledger does not have); \
            known CN with a different certificate; revoked here but active there; product, cohort or tags that \
            differ from what the device was issued with; duplicate identifiers; issued but never seen by the \
            backend (with its age). A device with several problems is listed under the most alarming one, with \
            every reason.

            Both sides stream: memory stays flat whatever their size.

            Exit status: 0 everything matched; 5 differences found; 6 the alarm (devices never issued here); \
            65 an export that is not the expected CSV or JSON; 74 an export that cannot be read, or a --report \
            file that already exists (a report is never replaced); 64 bad options.

            Examples:
              keyline ledger reconcile backend-devices.csv
              keyline ledger reconcile backend.json --profile line2 --report qa/run-42.html
              keyline ledger reconcile backend.csv --work-order WO-7 --json > reconcile.json
            """)

    @OptionGroup var options: StationOptions
    @Argument(help: ArgumentHelp("The backend's export (CSV or JSON).", valueName: "EXPORT")) var export: String
    @Option(name: .long, help: "Export format: auto (by extension, then content), csv or json.") var format = "auto"
    @Option(name: .long, help: "Only ledger records issued under this profile.") var profile: String?
    @Option(name: .long, help: "Only ledger records of this work order.") var workOrder: String?
    @Flag(name: .long, help: "Print the summary and every finding as JSON.") var json = false
    @Option(
        name: .long, help: ArgumentHelp("Also write a report QA can file: FILE.csv or FILE.html.", valueName: "FILE"))
    var report: String?
    @Option(name: .long, help: "Findings shown per category on the console.") var show = 10

    func validate() throws {
        guard ReconcileInputFormat(rawValue: format) != nil else {
            throw ValidationError("--format must be auto, csv or json")
        }
        if let report {
            do { _ = try ReconcileReport.kind(for: report) } catch let e as KeylineError {
                throw ValidationError(e.reason)
            }
        }
        if show < 0 { throw ValidationError("--show must not be negative") }
    }

    func run() async throws {
        var status: Int32 = 0
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation()
            guard FileManager.default.isReadableFile(atPath: export) else {
                throw KeylineError(.ioError, "cannot read \(export)")
            }
            if let report, FileManager.default.fileExists(atPath: report) {
                throw KeylineError(
                    .ioError, "\(report) already exists; a filed report is never replaced, choose another --report")
            }
            if let profile, station.config.profiles[profile] == nil {
                Console.warn(
                    "profile '\(profile)' is not in station.toml; selecting the ledger's records issued under it")
            }
            let started = ContinuousClock.now
            let (summary, store) = try await Reconciler(station: station, profile: profile, workOrder: workOrder).run(
                exportPath: export, format: ReconcileInputFormat(rawValue: format)!)
            let elapsed = ContinuousClock.now - started
            if summary.ledger_records_in_scope == 0 && (profile != nil || workOrder != nil) {
                Console.warn(
                    "no ledger record matches --profile/--work-order; every known device counts as out of scope")
            }
            if let report {
                try ReconcileReport.write(
                    try ReconcileReport.kind(for: report), to: report, summary: summary, store: store)
            }
            if json {
                try ReconcileReport.json(summary: summary, store: store)
            } else {
                printConsole(summary, store, elapsed: elapsed)
            }
            let counts = ReconcileCategory.allCases.map { "\($0.rawValue) \(summary.counts[$0.rawValue] ?? 0)" }
            summary.warnings.forEach(Console.warn)
            // The audit event comes after the findings were printed: a locked ledger must not turn the verdict into
            // a temporary failure, so it is a warning.
            do {
                try await station.ledger.appendEvent(
                    EventContent(
                        kind: .reconciled, recordSeq: nil, cn: nil,
                        detail:
                            "\((export as NSString).lastPathComponent): \(summary.export_rows) rows, matched \(summary.matched), \(counts.joined(separator: ", ")), exit \(summary.exitStatus)",
                        stationID: station.config.stationID, operatorName: station.config.operatorName(option: nil),
                        at: Date()))
            } catch let e as KeylineError {
                Console.warn("the reconcile was not recorded in the ledger: \(e.reason)")
            }
            if let report { Console.note("report written to \(report)") }
            status = summary.exitStatus
        }
        if status != 0 { throw ExitCode(status) }
    }

    func printConsole(_ s: ReconcileSummary, _ store: FindingStore, elapsed: Duration) {
        let verdict =
            switch s.exitStatus {
            case 0: "PASS: every device matched"
            case 6:
                "ALARM: the backend knows \(s.counts[ReconcileCategory.notIssuedHere.rawValue] ?? 0) device(s) this station never issued"
            default: "DIFFERENCES: the ledger and the backend disagree"
            }
        Console.out(
            """
            \(verdict)
            export  \(s.export) (\(s.format), \(s.export_rows) rows)
            ledger  station \(s.station_id), \(s.ledger_records_in_scope) records in scope, head seq \(s.ledger_head_seq)\(s.profile.map { ", profile \($0)" } ?? "")\(s.work_order.map { ", work order \($0)" } ?? "")

            """)
        func line(_ label: String, _ n: Int) -> String {
            label + String(repeating: " ", count: max(1, 52 - label.count)) + String(n) + "\n"
        }
        for c in ReconcileCategory.allCases {
            Console.out(line((c == .notIssuedHere ? "!! " : "   ") + c.title, s.counts[c.rawValue] ?? 0))
        }
        Console.out(line("   matched", s.matched))
        if s.out_of_scope > 0 { Console.out(line("   out of scope", s.out_of_scope)) }
        Console.out(line("   revoked or failed, absent from the backend", s.revoked_absent + s.failed_absent))
        for c in ReconcileCategory.allCases where (store.counts[c] ?? 0) > 0 && show > 0 {
            Console.out("\n\(c == .notIssuedHere ? "!! " : "")\(c.title):\n")
            for f in (store.examples[c] ?? []).prefix(show) {
                let place = f.row.map { "row \($0)" } ?? f.ledger_seq.map { "seq \($0)" } ?? ""
                Console.out("  \(f.identifier)  \(place)  \(f.detail)\n")
            }
            let more = (store.counts[c] ?? 0) - min(show, (store.examples[c] ?? []).count)
            if more > 0 { Console.out("  … and \(more) more (--json or --report lists them all)\n") }
        }
        Console.note(
            String(
                format: "reconciled in %.2f s",
                Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
    }
}

struct LedgerStatsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Counts by state, profile, CA, work order and day; issuance rate; refusals; CA days left.")

    @OptionGroup var options: StationOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation(readOnly: true)
            let s = try await LedgerStats.compute(station: station)
            if json {
                try Console.json(s)
                return
            }
            func table(_ title: String, _ values: [String: Int], byKey: Bool = false) {
                Console.out("\(title)\n")
                let rows =
                    byKey
                    ? values.sorted { $0.key < $1.key } : values.sorted { ($1.value, $0.key) < ($0.value, $1.key) }
                if rows.isEmpty { Console.out("  (none)\n") }
                for (k, v) in rows {
                    Console.out("  " + k + String(repeating: " ", count: max(1, 30 - k.count)) + "\(v)\n")
                }
            }
            Console.out("station \(s.station_id): \(s.records) records, \(s.events) events, \(s.refusals) refusals\n\n")
            table("by state", s.by_state)
            table("by profile", s.by_profile)
            table("by CA", s.by_ca)
            table("by work order", s.by_work_order)
            table("by day (UTC)", s.by_day, byKey: true)
            Console.out(
                """
                rate
                  first issued                  \(s.rate.first_issued ?? "-")
                  last issued                   \(s.rate.last_issued ?? "-")
                  average per hour              \(String(format: "%.1f", s.rate.average_per_hour))
                  busiest hour                  \(s.rate.busiest_hour ?? "-") (\(s.rate.busiest_hour_count))
                  last 24 hours                 \(s.rate.last_24h)

                """)
            table("refusals by rule", s.refusals_by_rule)
            Console.out("CAs\n")
            for ca in s.cas {
                Console.out(
                    "  \(ca.name) (\(ca.status)): \(ca.records) records, expires \(ca.not_after), \(ca.days_left) days left\(ca.issuing_days_left.map { ", can issue for \($0) more" } ?? "")\n"
                )
            }
        }
    }
}

struct LedgerSearch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "search",
        abstract: "Find certificates by CN prefix, serial, fingerprint, state, work order, profile or time.",
        discussion: """
            Filters combine (all must hold). Serials and fingerprints are hex, colons and case ignored. Times are \
            ISO 8601 (2026-11-29 or 2026-11-29T08:00:00Z); --since includes, --until excludes.

            Examples:
              keyline ledger search --cn-prefix SN-0012
              keyline ledger search --fingerprint 9f:3a:…  --json
              keyline ledger search --state revoked --since 2026-11-01
            """)

    @OptionGroup var options: StationOptions
    @Option(name: .long, help: "CNs starting with this text.") var cnPrefix: String?
    @Option(name: .long, help: "The certificate serial (hex).") var serial: String?
    @Option(name: .long, help: "The certificate's SHA-256 fingerprint (hex).") var fingerprint: String?
    @Option(name: .long, help: "issued, delivered, failed or revoked.") var state: String?
    @Option(name: .long, help: "Work order.") var workOrder: String?
    @Option(name: .long, help: "Profile.") var profile: String?
    @Option(name: .long, help: "CA name.") var ca: String?
    @Option(name: .long, help: ArgumentHelp("Issued at or after TIME.", valueName: "TIME")) var since: String?
    @Option(name: .long, help: ArgumentHelp("Issued before TIME.", valueName: "TIME")) var until: String?
    @Option(name: .long, help: "At most this many records.") var limit: Int?
    @Flag(name: .long, help: "Print JSON.") var json = false

    static func hex(_ text: String, _ option: String, length: Int?) throws -> String {
        var t = text.uppercased()
        t.removeAll { $0 == ":" || $0 == " " }
        if t.hasPrefix("0X") { t.removeFirst(2) }
        guard !t.isEmpty, t.allSatisfy(\.isHexDigit), length.map({ t.count == $0 }) ?? true else {
            throw ValidationError("\(option) must be \(length.map { "\($0) " } ?? "")hex digits")
        }
        return t
    }

    static func time(_ text: String, _ option: String) throws -> Date {
        if let d = Timestamp.parse(text) { return d }
        if let d = Timestamp.parse(text + "T00:00:00Z") { return d }
        throw ValidationError("\(option) '\(text)' is not an ISO 8601 date or time")
    }

    func validate() throws {
        if let state, RecordState(rawValue: state) == nil {
            throw ValidationError(
                "--state must be one of \(RecordState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let serial { _ = try Self.hex(serial, "--serial", length: nil) }
        if let fingerprint { _ = try Self.hex(fingerprint, "--fingerprint", length: 64) }
        if let since { _ = try Self.time(since, "--since") }
        if let until { _ = try Self.time(until, "--until") }
        if let limit, limit < 0 { throw ValidationError("--limit must not be negative") }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation(readOnly: true)
            // Serials are stored without leading zero bytes' padding beyond DER's; match what the ledger keeps.
            let query = RecordQuery(
                limit: limit, state: state.flatMap(RecordState.init(rawValue:)), profile: profile, cnPrefix: cnPrefix,
                workOrder: workOrder, createdSince: try since.map { try Self.time($0, "--since") },
                createdBefore: try until.map { try Self.time($0, "--until") },
                serialHex: try serial.map { try Self.hex($0, "--serial", length: nil) },
                fingerprint: try fingerprint.map { try Self.hex($0, "--fingerprint", length: 64) }, caName: ca)
            var found: [RecordJSON] = []
            var count = 0
            if !json {
                Console.out(
                    LedgerList.pad("SEQ", 6) + LedgerList.pad("CN", 24) + LedgerList.pad("STATE", 10)
                        + LedgerList.pad("PROFILE", 10) + LedgerList.pad("WORK ORDER", 12)
                        + LedgerList.pad("ISSUED", 22)
                        + "SERIAL\n")
            }
            try await station.ledger.forEachRecord(query) { r in
                count += 1
                if json {
                    found.append(RecordJSON(r))
                } else {
                    Console.out(
                        LedgerList.pad(String(r.seq), 6) + LedgerList.pad(r.content.cn, 24)
                            + LedgerList.pad(r.state.rawValue, 10) + LedgerList.pad(r.content.profile, 10)
                            + LedgerList.pad(r.content.workOrder ?? "-", 12)
                            + LedgerList.pad(Timestamp.iso(r.content.createdAt), 22) + r.content.serialHex + "\n")
                }
            }
            if json { try Console.json(["records": found]) } else { Console.note("\(count) record(s)") }
        }
    }
}
