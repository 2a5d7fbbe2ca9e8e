import ArgumentParser
import Foundation
import KeylineCore
import KeylineStation

struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a working station directory with a development CA.",
        discussion: """
            Makes DIR/station.toml (commented), a development CA named 'dev' (a P-256 root and an issuing CA with \
            pathlen:0; the root key is discarded), the issuing key as encrypted PKCS#8 (mode 0600) with a random \
            passphrase in DIR/secrets/dev.passphrase (mode 0600), a profile 'default', and an empty ledger. \
            Refuses (exit 64) to touch a directory that already holds a station.

            The development CA is for trying Keyline out. For production, import your factory CA with \
            'keyline ca import' and point the profile at it.
            """
    )

    @Argument(help: ArgumentHelp("Directory to create the station in.", valueName: "DIR"))
    var directory: String

    @Flag(name: .long, help: "Print more detail with errors.")
    var verbose = false

    func run() async throws {
        try await runReporting(verbose: verbose) {
            let result = try await StationSetup.initialize(directory: directory)
            Console.out(
                """
                Station created in \(result.directory)
                  station id      \(result.stationID)
                  CA 'dev'        SHA-256 \(result.caFingerprint)
                  CA valid until  \(Timestamp.iso(result.caNotAfter))
                  ledger          \(result.directory)/ledger.sqlite
                Next: keyline sign DEVICE.csr --station \(directory)

                """)
        }
    }
}
