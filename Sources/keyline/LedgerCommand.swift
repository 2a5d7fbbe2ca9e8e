import ArgumentParser
import Foundation
import KeylineCore
import KeylineLedger
import KeylineStation
import X509

struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger",
        abstract: "Inspect and verify the ledger of issued certificates.",
        subcommands: [
            LedgerVerify.self, LedgerList.self, LedgerSearch.self, LedgerShow.self, LedgerStatsCommand.self,
            LedgerRevoke.self, LedgerCheckpointCommand.self, LedgerReconcile.self, LedgerMigrate.self,
            LedgerCopyCommand.self,
        ]
    )
}

struct LedgerMigrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Bring the ledger's schema up to this build (PostgreSQL: run it with the owner's role).",
        discussion: """
            A SQLite ledger is migrated whenever it is opened; this command only reports its schema. A PostgreSQL \
            ledger is never migrated by a station on the way: run this once per upgrade, with a role that owns the \
            schema (the stations' own roles can insert and change states, not alter tables). Migrations run in one \
            transaction under an advisory lock, so two stations upgrading at once cannot race.

            Example:
              keyline ledger migrate --station /srv/keyline
            """)

    @OptionGroup var options: StationOptions

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let config = try options.loadConfig()
            let ledger = try await Station.openLedger(config, migrate: true)
            if let pg = ledger as? PostgresLedger {
                let applied = try await pg.appliedMigrations()
                Console.out(
                    "ledger \(config.ledger) (schema \(pg.schema)) is at \(applied.last ?? "none"): \(applied.joined(separator: ", "))\n"
                )
            } else {
                Console.out("ledger \(config.ledger) is up to date (SQLite ledgers migrate when opened)\n")
            }
        }
    }
}

struct LedgerCopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Move a station's SQLite ledger into the organization's PostgreSQL ledger, chain intact.",
        discussion: """
            Copies every record and event with its sequence number, state, timestamps and hash into the \
            destination's chain for the same station, in one transaction, then verifies the destination and \
            checks that its heads equal the source's. Stop the station first ('systemctl stop keyline'): a source \
            that changes during the copy is refused (exit 75), with nothing written.

            Refused, with nothing written: a source that does not verify (exit 4); a destination chain for the \
            station that already holds records or events, or a CN, serial, certificate or public key another \
            station already holds (exit 65); a database that does not answer (exit 69) or lacks migrations \
            (exit 78: run 'keyline ledger migrate' first).

            The password comes from --password-file (guarded like a passphrase: owner-only, no symlink) or the \
            systemd credential keyline-ledger-password; never from the URL or the command line.

            After the copy, point station.toml at the database (ledger = "postgres://..."); keep the SQLite file \
            as the archive it now is.

            Example:
              keyline ledger copy --from sqlite:/srv/keyline/ledger.sqlite \\
                --to postgres://line1@db.factory:5432/keyline \\
                --password-file /etc/keyline/ledger-password
            """)

    @Option(name: .long, help: ArgumentHelp("The ledger to copy: sqlite:PATH.", valueName: "sqlite:PATH"))
    var from: String
    @Option(
        name: .long,
        help: ArgumentHelp("The destination: postgres://USER@HOST:PORT/DATABASE.", valueName: "URL"))
    var to: String
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The station id whose chain this is (default: the one its records and events carry).", valueName: "ID"))
    var stationID: String?
    @Option(name: .long, help: ArgumentHelp("A file holding the database password.", valueName: "FILE"))
    var passwordFile: String?
    @Option(name: .long, help: "TLS to the database: disable, require or verify-full.") var sslmode = "verify-full"
    @Option(name: .long, help: ArgumentHelp("CA certificates (PEM) for verify-full.", valueName: "FILE"))
    var caFile: String?
    @Option(name: .long, help: "The PostgreSQL schema the ledger lives in.") var schema = "keyline"
    @Flag(name: .long, help: "Print the report as JSON.") var json = false
    @Flag(name: .long, help: "Print more detail with errors.") var verbose = false

    struct Report: Encodable {
        var station_id: String
        var records: Int
        var events: Int
        var intact: Bool
        var heads_match: Bool
        var records_head_seq: Int64
        var records_head_hash: String
        var events_head_seq: Int64
        var events_head_hash: String
    }

    func run() async throws {
        try await runReporting(verbose: verbose) {
            guard from.hasPrefix("sqlite:"), from.count > 7 else {
                throw KeylineError(.usage, "--from must be sqlite:PATH (got '\(from)')")
            }
            let path = String(from.dropFirst(7))
            guard let mode = PostgresSettings.SSLMode(rawValue: sslmode) else {
                throw KeylineError(.usage, "--sslmode must be disable, require or verify-full (got '\(sslmode)')")
            }
            var settings = PostgresSettings()
            settings.passwordFile = passwordFile
            settings.sslMode = mode
            settings.caFile = caFile
            let options = try Station.postgresOptions(url: to, settings: settings)
            // The source must exist; opening it never creates one.
            let probe = try SQLiteLedger(path: path, stationID: stationID ?? "")
            let recorded = try await Self.recordedStationIDs(probe, path: path)
            let id: String
            if let stationID {
                // Only to choose among several (a station renamed at some point), never to file one station's
                // rows under another's chain.
                guard recorded.contains(stationID) else {
                    throw KeylineError(
                        .usage,
                        "--station-id \(stationID): the rows of \(path) belong to \(recorded.sorted().joined(separator: ", "))"
                    )
                }
                id = stationID
            } else {
                guard recorded.count == 1, let only = recorded.first else {
                    throw KeylineError(
                        .usage,
                        "\(path) holds rows of several stations (\(recorded.sorted().joined(separator: ", "))); name the chain with --station-id"
                    )
                }
                id = only
            }
            let source = try SQLiteLedger(path: path, stationID: id)
            let destination = try await PostgresLedger(
                options: options, stationID: id, schema: schema, migrate: false, registration: .none)
            let report = try await destination.copyChain(from: source)
            let h = report.destinationHeads
            if json {
                try Console.json(
                    Report(
                        station_id: id, records: report.records, events: report.events,
                        intact: report.verification.isIntact, heads_match: h == report.sourceHeads,
                        records_head_seq: h.recordsSeq, records_head_hash: h.recordsHash,
                        events_head_seq: h.eventsSeq, events_head_hash: h.eventsHash))
            } else {
                Console.out(
                    "copied station \(id): \(report.records) records and \(report.events) events from \(path) to \(options.host):\(options.port)/\(options.database) (schema \(schema))\n"
                )
            }
            guard report.matches else {
                let why =
                    report.verification.isIntact
                    ? "its heads (\(h.summary)) differ from the source's (\(report.sourceHeads.summary))"
                    : "its chain does not verify: \(report.verification.problems.first ?? "")"
                throw KeylineError(.integrity, "the copy committed but \(why)")
            }
            if !json {
                Console.out("verified: chain intact; \(h.summary), the same as the source\n")
            }
        }
    }

    /// The station ids a ledger's rows carry (normally one).
    static func recordedStationIDs(_ ledger: SQLiteLedger, path: String) async throws -> Set<String> {
        var ids: Set<String> = []
        try await ledger.forEachEvent(kinds: nil, afterSeq: 0) { ids.insert($0.content.stationID) }
        try await ledger.forEachRecord(RecordQuery()) { ids.insert($0.content.stationID) }
        guard !ids.isEmpty else {
            throw KeylineError(.usage, "\(path) holds no records or events, so there is nothing to copy")
        }
        return ids
    }
}

struct RecordJSON: Encodable {
    var seq: Int64
    var cn: String
    var serial: String
    var fingerprint: String
    var public_key_sha256: String
    var ca: String
    var ca_fingerprint: String
    var profile: String
    var station_id: String
    var `operator`: String
    var key_origin: String
    @Nullable var hardware_id: String?
    @Nullable var work_order: String?
    var not_before: Date
    var not_after: Date
    var state: String
    var created_at: String
    var updated_at: String
    var hash: String
    /// The backend attributes fixed at issuance (null for records from before the ledger kept them).
    @Nullable var attributes: AttributesJSON?
    /// For a certificate issued with --reissue, the seq of the revoked record it replaces.
    @Nullable var reissue_of: Int64?

    struct AttributesJSON: Encodable {
        var description: String
        var tags: [String]
        @Nullable var product_prn: String?
        @Nullable var cohort_prn: String?
        @Nullable var target: String?
    }

    init(_ r: LedgerRecord) {
        let c = r.content
        seq = r.seq
        cn = c.cn
        serial = c.serialHex
        fingerprint = c.certificateFingerprint
        public_key_sha256 = c.publicKeySHA256
        ca = c.caName
        ca_fingerprint = c.caFingerprint
        profile = c.profile
        station_id = c.stationID
        self.operator = c.operatorName
        key_origin = c.keyOrigin.rawValue
        hardware_id = c.hardwareID
        work_order = c.workOrder
        not_before = c.notBefore
        not_after = c.notAfter
        state = r.state.rawValue
        created_at = Timestamp.isoMillis(c.createdAt)
        updated_at = Timestamp.isoMillis(r.updatedAt)
        hash = r.hash
        reissue_of = c.reissueOf
        attributes = c.attributes.map {
            AttributesJSON(
                description: $0.description, tags: $0.tags, product_prn: $0.productPRN, cohort_prn: $0.cohortPRN,
                target: $0.target)
        }
    }
}

struct LedgerVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the hash chains and record states; name the first bad sequence number.",
        discussion: """
            Recomputes every record's and event's hash from its stored content and the previous hash, and checks each \
            record's state against its events. Detects edited, deleted, inserted and reordered rows (even when the \
            database's protective triggers were dropped). Exit 0 when intact, 4 when not.

            The chain cannot show that the newest records were removed; a checkpoint kept outside the station can. \
            With --checkpoint FILE (from 'keyline ledger checkpoint', or the FILE.checkpoint beside every manifest \
            export) it also checks the checkpoint's signature and that the ledger still holds every record and \
            event it covered, and says how many are missing. Give --public-key with QA's own copy of the station's \
            public key; by default the station's station-signing.pem is used.

            On a PostgreSQL ledger shared by many stations, --all-stations walks every station's chains (QA's \
            read-only role is enough for this and for list, search, show and stats). Exit 4 when any is broken.

            Examples:
              keyline ledger verify
              keyline ledger verify --checkpoint /qa/line-1/2026-11-29.checkpoint --public-key /qa/line-1.pem
              keyline ledger verify --all-stations --json
            """
    )

    @OptionGroup var options: StationOptions
    @Flag(name: .long, help: "Print JSON.") var json = false
    @Option(
        name: .long, help: ArgumentHelp("Also prove the ledger holds what this checkpoint covered.", valueName: "FILE"))
    var checkpoint: String?
    @Option(
        name: .long,
        help: ArgumentHelp("The station public key (PEM) to check the checkpoint with.", valueName: "PEM"))
    var publicKey: String?
    @Flag(name: .long, help: "Verify every station's chains in a shared PostgreSQL ledger.") var allStations = false

    struct StationReport: Encodable {
        var station_id: String
        var intact: Bool
        var records: Int
        var events: Int
        var first_bad_record_seq: Int64?
        var first_bad_event_seq: Int64?
        var problems: [String]
        var head_seq: Int64
        var head_hash: String
    }

    struct AllStationsReport: Encodable {
        var intact: Bool
        var stations: [StationReport]
    }

    func verifyAllStations(_ station: Station) async throws {
        guard let pg = station.ledger as? PostgresLedger else {
            throw KeylineError(
                .usage, "--all-stations is for a PostgreSQL ledger; this station's SQLite ledger holds one station")
        }
        guard checkpoint == nil else {
            throw KeylineError(.usage, "--checkpoint belongs to one station's ledger; leave out --all-stations")
        }
        var reports: [StationReport] = []
        for id in try await pg.stationIDs() {
            let r = try await pg.verify(chain: id)
            reports.append(
                StationReport(
                    station_id: id, intact: r.isIntact, records: r.recordsChecked, events: r.eventsChecked,
                    first_bad_record_seq: r.firstBadRecordSeq, first_bad_event_seq: r.firstBadEventSeq,
                    problems: r.problems, head_seq: r.headSeq, head_hash: r.headHash))
        }
        let broken = reports.filter { !$0.intact }
        if json {
            try Console.json(AllStationsReport(intact: broken.isEmpty, stations: reports))
        } else {
            for r in reports {
                if r.intact {
                    Console.out(
                        "station \(r.station_id): intact, \(r.records) records, \(r.events) events, head seq \(r.head_seq) hash \(r.head_hash)\n"
                    )
                } else {
                    Console.out("station \(r.station_id): TAMPERED, \(r.problems.count) problem(s)\n")
                    r.problems.forEach { Console.out("  \($0)\n") }
                }
            }
            Console.out(
                "\(reports.count) station(s), \(reports.reduce(0) { $0 + $1.records }) records: \(broken.isEmpty ? "all intact" : "\(broken.count) broken")\n"
            )
        }
        if !broken.isEmpty {
            Console.error(
                KeylineError(
                    .integrity,
                    "ledger integrity check failed for station(s) \(broken.map(\.station_id).joined(separator: ", "))"),
                verbose: options.verbose)
            throw ExitCode(KeylineError.Code.integrity.exitStatus)
        }
    }

    struct CheckpointReport: Encodable {
        var file: String
        var holds: Bool
        var records_seq: Int64
        var events_seq: Int64
        var created_at: String
        var missing_records: Int64
        var missing_events: Int64
        var record_differs: Bool
        var event_differs: Bool
        var newer_records: Int64
        var newer_events: Int64
        var problem: String?
    }

    struct Report: Encodable {
        var intact: Bool
        var records: Int
        var events: Int
        var first_bad_record_seq: Int64?
        var first_bad_event_seq: Int64?
        var problems: [String]
        var head_seq: Int64
        var head_hash: String
        var checkpoint: CheckpointReport?

        func encode(to encoder: Encoder) throws {
            enum K: String, CodingKey {
                case intact, records, events, first_bad_record_seq, first_bad_event_seq, problems, head_seq, head_hash,
                    checkpoint
            }
            var c = encoder.container(keyedBy: K.self)
            try c.encode(intact, forKey: .intact)
            try c.encode(records, forKey: .records)
            try c.encode(events, forKey: .events)
            try c.encode(first_bad_record_seq, forKey: .first_bad_record_seq)
            try c.encode(first_bad_event_seq, forKey: .first_bad_event_seq)
            try c.encode(problems, forKey: .problems)
            try c.encode(head_seq, forKey: .head_seq)
            try c.encode(head_hash, forKey: .head_hash)
            if let checkpoint { try c.encode(checkpoint, forKey: .checkpoint) }
        }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation(readOnly: true)
            if allStations { return try await verifyAllStations(station) }
            // The chain first: a broken chain is the finding, whatever the checkpoint says.
            let r = try await station.ledger.verify()
            var verdict: LedgerCheckpoint.Verdict?
            if let checkpoint {
                guard let data = FileManager.default.contents(atPath: checkpoint) else {
                    throw KeylineError(.ioError, "cannot read \(checkpoint)")
                }
                do {
                    verdict = try await LedgerCheckpoint.verify(
                        station: station, text: String(decoding: data, as: UTF8.self), source: checkpoint,
                        publicKeyPath: publicKey)
                } catch let e as KeylineError where !r.isIntact {
                    Console.warn("checkpoint not checked: \(e.reason)")
                }
            }
            if json {
                try Console.json(
                    Report(
                        intact: r.isIntact && (verdict?.holds ?? true), records: r.recordsChecked,
                        events: r.eventsChecked,
                        first_bad_record_seq: r.firstBadRecordSeq,
                        first_bad_event_seq: r.firstBadEventSeq, problems: r.problems, head_seq: r.headSeq,
                        head_hash: r.headHash,
                        checkpoint: verdict.map { v in
                            CheckpointReport(
                                file: checkpoint!, holds: v.holds, records_seq: v.checkpoint.recordsSeq,
                                events_seq: v.checkpoint.eventsSeq,
                                created_at: Timestamp.isoMillis(v.checkpoint.createdAt),
                                missing_records: v.missingRecords, missing_events: v.missingEvents,
                                record_differs: v.recordDiffers, event_differs: v.eventDiffers,
                                newer_records: v.newerRecords, newer_events: v.newerEvents, problem: v.problem)
                        }))
            } else if r.isIntact {
                Console.out(
                    "ledger intact: \(r.recordsChecked) records, \(r.eventsChecked) events, head seq \(r.headSeq) hash \(r.headHash)\n"
                )
            } else {
                Console.out("ledger TAMPERED: \(r.problems.count) problem(s)\n")
                r.problems.forEach { Console.out("  \($0)\n") }
            }
            if let v = verdict, !json {
                if v.holds && !r.isIntact {
                    Console.out(
                        "checkpoint: records 1–\(v.checkpoint.recordsSeq) and events 1–\(v.checkpoint.eventsSeq) are present with the heads it signed, but the chain is broken (above)\n"
                    )
                } else if v.holds {
                    Console.out(
                        "checkpoint holds: records 1–\(v.checkpoint.recordsSeq) and events 1–\(v.checkpoint.eventsSeq) of \(Timestamp.isoMillis(v.checkpoint.createdAt)) are all present and unchanged (\(v.newerRecords) records, \(v.newerEvents) events since)\n"
                    )
                } else {
                    Console.out("checkpoint FAILS: \(v.problem ?? "")\n")
                }
            }
            if let v = verdict, !v.holds, r.isIntact {
                Console.error(
                    KeylineError(.integrity, v.problem ?? "checkpoint does not hold"), verbose: options.verbose)
                throw ExitCode(KeylineError.Code.integrity.exitStatus)
            }
            if !r.isIntact {
                let first =
                    r.firstBadRecordSeq.map { "record seq \($0)" } ?? r.firstBadEventSeq.map { "event seq \($0)" }
                    ?? "unknown"
                Console.error(
                    KeylineError(.integrity, "ledger integrity check failed at \(first)"), verbose: options.verbose)
                throw ExitCode(KeylineError.Code.integrity.exitStatus)
            }
        }
    }
}

struct LedgerList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List issued certificates in ledger order.")

    @OptionGroup var options: StationOptions
    @Option(name: .long, help: "Only records in this state (issued, delivered, failed, revoked).") var state: String?
    @Option(name: .long, help: "Only records issued under this profile.") var profile: String?
    @Option(name: .long, help: "Only records of this work order.") var workOrder: String?
    @Option(name: .long, help: "At most this many records.") var limit: Int?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func validate() throws {
        if let state, RecordState(rawValue: state) == nil {
            throw ValidationError(
                "--state must be one of \(RecordState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if let limit, limit < 0 { throw ValidationError("--limit must not be negative") }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation(readOnly: true)
            let records = try await station.ledger.records(
                RecordQuery(
                    limit: limit, state: state.flatMap(RecordState.init(rawValue:)), profile: profile,
                    workOrder: workOrder))
            if json {
                try Console.json(["records": records.map(RecordJSON.init)])
                return
            }
            Console.out(
                pad("SEQ", 6) + pad("CN", 24) + pad("STATE", 10) + pad("PROFILE", 10) + pad("NOT AFTER", 22)
                    + "FINGERPRINT\n")
            for r in records {
                Console.out(
                    pad(String(r.seq), 6) + pad(r.content.cn, 24) + pad(r.state.rawValue, 10)
                        + pad(r.content.profile, 10)
                        + pad(Timestamp.iso(r.content.notAfter), 22) + r.content.certificateFingerprint.prefix(16)
                        + "…\n")
            }
            Console.note("\(records.count) record(s)")
        }
    }

    func pad(_ s: String, _ n: Int) -> String { Self.pad(s, n) }

    static func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count)
    }
}

struct LedgerShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show one certificate's record and its events.")

    @OptionGroup var options: StationOptions
    @Argument(help: "The certificate's CN (the device identifier).") var cn: String
    @Flag(name: .long, help: "Print JSON.") var json = false
    @Flag(name: .long, help: "Print the certificate as PEM (re-export).") var pem = false

    struct EventJSON: Encodable {
        var seq: Int64
        var kind: String
        var detail: String
        var `operator`: String
        var at: String
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation(readOnly: true)
            guard let record = try await station.ledger.record(cn: cn) else {
                throw KeylineError(.dataError, "no certificate for CN '\(cn)' in the ledger")
            }
            if pem {
                Console.out(
                    try Certificate(derEncoded: record.content.certificateDER).serializeAsPEM().pemString + "\n")
                return
            }
            let events = try await station.ledger.events(recordSeq: record.seq, limit: nil)
            // Earlier certificates of this CN (re-issued after rework), oldest first.
            let earlier = try await station.ledger.history(cn: cn).filter { $0.seq != record.seq }
            let eventJSON = events.map {
                EventJSON(
                    seq: $0.seq, kind: $0.content.kind.rawValue, detail: $0.content.detail,
                    operator: $0.content.operatorName, at: Timestamp.isoMillis($0.content.at))
            }
            if json {
                struct Out: Encodable {
                    var record: RecordJSON
                    var events: [EventJSON]
                    var earlier: [RecordJSON]
                }
                try Console.json(
                    Out(record: RecordJSON(record), events: eventJSON, earlier: earlier.map(RecordJSON.init)))
                return
            }
            let c = record.content
            Console.out(
                """
                \(c.cn)
                  seq          \(record.seq)
                  state        \(record.state.rawValue)
                  serial       \(c.serialHex)
                  SHA-256      \(c.certificateFingerprint)
                  public key   \(c.publicKeySHA256)
                  CA           \(c.caName) \(c.caFingerprint)
                  profile      \(c.profile)
                  station      \(c.stationID)
                  operator     \(c.operatorName)
                  key origin   \(c.keyOrigin.rawValue)
                  hardware id  \(c.hardwareID ?? "-")
                  work order   \(c.workOrder ?? "-")\(c.attributes.map { a in
                    "\n  description  \(a.description)\n  tags         \(a.tags.joined(separator: ","))"
                    + "\n  product      \(a.productPRN ?? "-")\n  cohort       \(a.cohortPRN ?? "-")\n  target       \(a.target ?? "-")"
                } ?? "")
                  valid        \(Timestamp.iso(c.notBefore)) .. \(Timestamp.iso(c.notAfter))
                  issued at    \(Timestamp.isoMillis(c.createdAt))
                  hash         \(record.hash)\(c.reissueOf.map { "\n  re-issue of  seq \($0)" } ?? "")\(earlier.isEmpty ? "" : "\n  earlier      " + earlier.map { "seq \($0.seq) (\($0.state.rawValue), serial \($0.content.serialHex))" }.joined(separator: ", "))
                events:

                """)
            for e in events {
                Console.out(
                    "  \(e.seq)  \(Timestamp.isoMillis(e.content.at))  \(e.content.kind.rawValue)  \(e.content.detail)\n"
                )
            }
        }
    }
}
