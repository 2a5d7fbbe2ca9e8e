import ArgumentParser
import Foundation
import KeylineCore
import KeylineLedger
import KeylineLine
import KeylineStation

#if canImport(Glibc)
    import Glibc
#endif

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "The station's daemon: provision every device plugged into the fixtures of station.toml.",
        discussion: """
            For each device on a fixture: identify it, choose its CN (the profile's cn_template over the hardware \
            id), get its CSR or make its key pair, sign and commit to the ledger, write the certificate, read it \
            back. The record becomes 'delivered' only when the read-back matches. docs/device-protocol.md is the \
            protocol; docs/line.md the operator's guide.

            The console shows one line per device, PASS or FAIL first:
              PASS  fx-1     SN-HW-0042           HW-0042            0.84s
              FAIL  fx-2     SN-HW-0043           HW-0043            5.02s  read-back does not match ...
            and ALARM lines (refusals spiking, a fixture that cannot be opened). JSON lines for the MES go to \
            [daemon] log in station.toml (default run/devices.jsonl in the station directory).

            A device that comes back with the same hardware id and key gets the same certificate again. SIGTERM or \
            Ctrl-C stops after the devices in flight; after a crash the next start fails the interrupted devices' \
            records cleanly (they get the same certificate when connected again).

            Examples:
              keyline run --station /srv/keyline
              keyline run --fixture fx-1 --fixture fx-2          # only these fixtures
            """)

    @OptionGroup var options: StationOptions
    @Option(name: .long, help: ArgumentHelp("Run only this fixture (repeatable).", valueName: "NAME")) var fixture:
        [String] = []
    @Option(name: .long, help: ArgumentHelp("File holding the CA key's passphrase (mode 0600).", valueName: "FILE"))
    var passphraseFile: String?
    @Option(name: .long, help: "Operator recorded with each certificate (default: $KEYLINE_OPERATOR, station.toml).")
    var `operator`: String?
    @Option(name: .long, help: ArgumentHelp("JSON-lines log for the MES (overrides [daemon] log).", valueName: "FILE"))
    var log: String?

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let station = try await options.openStation()
            // A large ledger's index pages into the page cache before the first devices need them.
            (station.ledger as? SQLiteLedger)?.prefetch()
            var fixtures = station.config.fixtures.values.sorted { $0.name < $1.name }
            if !fixture.isEmpty {
                for name in fixture where station.config.fixtures[name] == nil {
                    throw KeylineError(
                        .usage,
                        "no fixture '\(name)' in station.toml (fixtures: \(station.config.fixtures.keys.sorted().joined(separator: ", ")))"
                    )
                }
                fixtures = fixtures.filter { fixture.contains($0.name) }
            }
            let logPath = log ?? station.config.daemon.logPath ?? "\(station.config.directory)/run/devices.jsonl"
            let reporter = try Reporter(
                stationID: station.config.stationID, logPath: logPath, color: isatty(1) != 0,
                console: { Console.out($0 + "\n") })
            let daemon = try await LineDaemon(
                station: station, fixtures: fixtures, reporter: reporter, passphraseFile: passphraseFile,
                operatorName: station.config.operatorName(option: `operator`),
                credentialsDirectory: ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"])
            try await daemon.run()
        }
    }
}

struct WorkOrderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workorder",
        abstract: "Open, list and close work orders: how many devices the line builds under a profile.",
        discussion: """
            While a work order is open for a profile, 'keyline run' records it with every certificate it issues \
            under that profile and refuses devices beyond its quantity (rule work-order). Revoked certificates do \
            not count, so a scrapped unit's replacement fits. 'manifest devices --work-order ID' exports one.

            Examples:
              keyline workorder open --profile default --quantity 500 --id WO-2211
              keyline workorder list
              keyline workorder close WO-2211
            """,
        subcommands: [Open.self, List.self, Close.self])

    struct Open: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Open a work order (one open per profile).")
        @OptionGroup var options: StationOptions
        @Option(name: .long, help: "The profile the line issues under.") var profile: String
        @Option(name: .long, help: "How many devices it builds.") var quantity: Int
        @Option(name: .long, help: "Its id (default WO-YYYYMMDD-N).") var id: String?
        @Option(name: .long, help: "Operator recorded with the event.") var `operator`: String?

        func run() async throws {
            try await runReporting(verbose: options.verbose) {
                let station = try await options.openStation()
                let order = try await WorkOrders.open(
                    station: station, id: id, profile: profile, quantity: quantity,
                    operatorName: station.config.operatorName(option: `operator`))
                Console.out(
                    "opened work order \(order.id): \(order.quantity) device(s) under profile \(order.profile)\n")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List work orders with how many were issued.")
        @OptionGroup var options: StationOptions
        @Flag(name: .long, help: "Print JSON.") var json = false

        struct Row: Encodable {
            var order: WorkOrder
            var issued: Int
            func encode(to encoder: Encoder) throws {
                try order.encode(to: encoder)
                var c = encoder.container(keyedBy: K.self)
                try c.encode(issued, forKey: .issued)
                try c.encode(order.isOpen ? "open" : "closed", forKey: .state)
            }
            enum K: String, CodingKey { case issued, state }
        }

        func run() async throws {
            try await runReporting(verbose: options.verbose) {
                let station = try await options.openStation()
                var rows: [Row] = []
                for order in try await WorkOrders.all(station.ledger) {
                    rows.append(
                        Row(order: order, issued: try await WorkOrders.issuedCount(order.id, in: station.ledger)))
                }
                if json { return try Console.json(rows) }
                if rows.isEmpty { return Console.out("no work orders (open one with 'keyline workorder open')\n") }
                Console.out("ID                   PROFILE          ISSUED / QTY   STATE   OPENED\n")
                for r in rows {
                    func pad(_ s: String, _ n: Int) -> String {
                        s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0)
                    }
                    Console.out(
                        "\(pad(r.order.id, 20)) \(pad(r.order.profile, 16)) \(pad("\(r.issued) / \(r.order.quantity)", 14)) \(pad(r.order.isOpen ? "open" : "closed", 7)) \(Timestamp.iso(r.order.openedAt))\n"
                    )
                }
            }
        }
    }

    struct Close: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Close a work order: nothing more is issued under it.")
        @OptionGroup var options: StationOptions
        @Argument(help: "The work order's id.") var id: String
        @Option(name: .long, help: "Operator recorded with the event.") var `operator`: String?

        func run() async throws {
            try await runReporting(verbose: options.verbose) {
                let station = try await options.openStation()
                let order = try await WorkOrders.close(
                    station: station, id: id, operatorName: station.config.operatorName(option: `operator`))
                let issued = try await WorkOrders.issuedCount(order.id, in: station.ledger)
                Console.out("closed work order \(order.id): \(issued) of \(order.quantity) issued\n")
            }
        }
    }
}
