import ArgumentParser
import Foundation
import KeylineCore
import KeylineStation

@main
struct Keyline: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyline",
        abstract: "Factory-line certificate signing and pre-enrollment station.",
        discussion: """
            Signs device CSRs (or makes device keypairs) with a guarded factory CA, and records every certificate in a \
            hash-chained ledger before it leaves the station.

            Quick start:
              keyline demo --station ./line --devices 20 --fixtures 3   # the whole line, simulated
              keyline init ./station            # a station with a development CA and an empty ledger
              keyline help sign                 # how to sign device CSRs
              keyline issue --count 10 --cn-template 'SN-{seq:06}' --out ./batch --station ./station

            Exit statuses: 0 ok, 3 policy refusal, 4 ledger integrity failure, 5 reconcile found differences, \
            6 reconcile alarm (devices never issued here), 64 usage, 65 bad input data, \
            69 unavailable, 70 internal error, 74 I/O error, 75 temporary failure (retry), 77 key guard refusal, \
            78 configuration error.
            """,
        version: "0.1.0",
        subcommands: [
            InitCommand.self, CACommand.self, ProfileCommand.self, ConfigCommand.self, SignCommand.self,
            IssueCommand.self,
            LedgerCommand.self, ManifestCommand.self, RunCommand.self, WorkOrderCommand.self, DemoCommand.self,
        ]
    )

    /// Runs the command; usage errors get the same one-line `keyline: error:` form as every other failure.
    static func main() async {
        do {
            var command = try await asyncParseAsRoot(nil)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .success || error is ExitCode {
                exit(withError: error)
            }
            let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid usage"
            FileHandle.standardError.write(Data("keyline: error: \(message) (see 'keyline help')\n".utf8))
            Foundation.exit(code.rawValue)
        }
    }
}

/// Options every station command shares.
struct StationOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The station directory (default: $KEYLINE_STATION, else the current directory).", valueName: "DIR"))
    var station: String?

    @Flag(name: .long, help: "Print more detail with errors.")
    var verbose = false

    /// Reads station.toml (without opening the ledger) and prints its warnings.
    func loadConfig() throws -> StationConfig {
        let config = try StationConfig.load(directory: Station.locate(explicit: station))
        config.warnings.forEach(Console.warn)
        return config
    }

    /// Opens the station and prints the warnings every command owes its user.
    func openStation(readOnly: Bool = false) async throws -> Station {
        let station = try await Station.open(directory: Station.locate(explicit: station), readOnly: readOnly)
        station.warnings.forEach(Console.warn)
        return station
    }
}

/// Runs a command body, turning a ``KeylineError`` into one line on stderr and its documented exit status.
func runReporting(verbose: Bool, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as KeylineError {
        Console.error(error, verbose: verbose)
        throw ExitCode(error.exitStatus)
    } catch let error as ExitCode {
        throw error
    } catch {
        Console.error(KeylineError(.internalError, "unexpected error: \(error)"), verbose: verbose)
        throw ExitCode(KeylineError.Code.internalError.exitStatus)
    }
}

enum Console {
    static func error(_ error: KeylineError, verbose: Bool) {
        var line = "keyline: error: \(error.reason)"
        if verbose {
            line += " [code \(error.code.rawValue), exit \(error.exitStatus)\(error.rule.map { ", rule \($0)" } ?? "")]"
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func warn(_ text: String) {
        FileHandle.standardError.write(Data("keyline: warning: \(text)\n".utf8))
    }

    static func note(_ text: String) {
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }

    static func out(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    /// Prints an Encodable value as pretty, key-sorted JSON on stdout.
    static func json<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, enc in
            var c = enc.singleValueContainer()
            try c.encode(Timestamp.iso(date))
        }
        out(String(decoding: try encoder.encode(value), as: UTF8.self) + "\n")
    }
}
