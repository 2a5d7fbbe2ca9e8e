import ArgumentParser
import Foundation
import KeylineCore
import KeylineStation

struct ProfileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "List and show issuance profiles (product lines) from station.toml.",
        subcommands: [ProfileList.self, ProfileShow.self]
    )
}

/// A profile as JSON.
struct ProfileJSON: Encodable {
    var name: String
    var ca: String
    var cn_pattern: String
    var key_types: [String]
    var validity_days: Int
    var min_validity_days: Int
    @Nullable var subject_organization: String?
    @Nullable var subject_organizational_unit: String?
    @Nullable var product_name: String?
    @Nullable var product_prn: String?
    @Nullable var cohort_prn: String?
    var tags: [String]
    @Nullable var target: String?
    @Nullable var jitp_description: String?
    @Nullable var description_template: String?

    init(_ p: Profile) {
        name = p.name
        ca = p.caName
        cn_pattern = p.cnPattern
        key_types = p.keyTypes.map(\.rawValue).sorted()
        validity_days = p.validityDays
        min_validity_days = p.minValidityDays
        subject_organization = p.organization
        subject_organizational_unit = p.organizationalUnit
        product_name = p.jitp.productName
        product_prn = p.jitp.productPRN?.description
        cohort_prn = p.jitp.cohortPRN?.description
        tags = p.jitp.tags
        target = p.jitp.target
        jitp_description = p.jitp.description
        description_template = p.jitp.descriptionTemplate
    }
}

struct ProfileList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the profiles.")
    @OptionGroup var options: StationOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let config = try options.loadConfig()
            let profiles = config.profiles.keys.sorted().map { config.profiles[$0]! }
            if json {
                try Console.json(["profiles": profiles.map(ProfileJSON.init)])
                return
            }
            let rows = profiles.map { p in
                [
                    p.name, p.caName, p.keyTypes.map(\.rawValue).sorted().joined(separator: ","),
                    p.jitp.productName ?? "-",
                    p.jitp.cohortPRN?.description ?? "-",
                    p.jitp.tags.isEmpty ? "-" : p.jitp.tags.joined(separator: ","),
                ]
            }
            Console.out(Table.render(["PROFILE", "CA", "KEYS", "PRODUCT", "COHORT", "TAGS"], rows))
        }
    }
}

struct ProfileShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one profile in full.")
    @OptionGroup var options: StationOptions
    @Argument(help: "The profile's name.") var name: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let config = try options.loadConfig()
            let p = try config.profile(name)
            if json {
                try Console.json(ProfileJSON(p))
                return
            }
            let j = ProfileJSON(p)
            var lines = [
                "\(p.name)", "  ca                   \(j.ca)", "  cn_pattern           \(j.cn_pattern)",
                "  key_types            \(j.key_types.joined(separator: ", "))",
                "  validity_days        \(j.validity_days) (at least \(j.min_validity_days))",
            ]
            let optional: [(String, String?)] = [
                ("subject O", j.subject_organization), ("subject OU", j.subject_organizational_unit),
                ("product_name", j.product_name), ("product_prn", j.product_prn), ("cohort_prn", j.cohort_prn),
                ("tags", j.tags.isEmpty ? nil : j.tags.joined(separator: ", ")), ("target", j.target),
                ("jitp_description", j.jitp_description), ("description_template", j.description_template),
            ]
            for (k, v) in optional {
                if let v { lines.append("  " + k.padding(toLength: 21, withPad: " ", startingAt: 0) + v) }
            }
            Console.out(lines.joined(separator: "\n") + "\n")
        }
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check the station's configuration.",
        subcommands: [ConfigCheck.self]
    )
}

struct ConfigCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check station.toml, every CA certificate and the key files' guard, without opening any key.",
        discussion: """
            Exit 0 when all is well; 78 for a configuration error (naming the file, the table and the key), 65 for \
            an unusable CA certificate, 77 when a key or passphrase file would be refused by the key guard.
            """
    )
    @OptionGroup var options: StationOptions

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let config = try options.loadConfig()
            let report = try ConfigChecker.check(config, now: Date())
            report.warnings.forEach(Console.warn)
            Console.out(
                "station.toml OK: \(config.cas.count) CA(s), \(config.profiles.count) profile(s), ledger \(config.ledger)\n"
            )
        }
    }
}

enum Table {
    /// Renders rows under a header, each column as wide as its widest cell plus two spaces (the last unpadded).
    static func render(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = (0..<header.count).map { c in all.map { $0[c].count }.max()! + 2 }
        return all.map { row in
            row.enumerated().map { c, cell in
                c == row.count - 1 ? cell : cell.padding(toLength: widths[c], withPad: " ", startingAt: 0)
            }.joined()
        }.joined(separator: "\n") + "\n"
    }
}
