import Foundation
import KeylineCore
import TOMLKit

/// Where the ledger lives, from the top-level `ledger` key of `station.toml`.
public enum LedgerLocation: Sendable, Equatable, CustomStringConvertible {
    /// `sqlite:PATH`, PATH relative to the station directory unless absolute.
    case sqlite(path: String)
    /// `postgres://USER@HOST:PORT/DB`: the organization's ledger shared by several stations (no password here).
    case postgres(url: String)

    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite:\(path)"
        case .postgres(let url): url
        }
    }
}

/// How a station reaches a PostgreSQL ledger besides its URL: `ledger_password_file`, `ledger_sslmode`,
/// `ledger_ca_file` (top level of station.toml). The password may instead be the systemd credential
/// `keyline-ledger-password`.
public struct PostgresSettings: Sendable, Equatable {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable
        case require
        case verifyFull = "verify-full"
    }

    public var passwordFile: String?
    public var sslMode: SSLMode = .verifyFull
    public var caFile: String?

    public init() {}
}

/// Whether a CA may still sign.
public enum CAStatus: String, Sendable, CaseIterable {
    case active
    case retired
}

/// One `[cas.NAME]` section.
public struct CAConfig: Sendable, Equatable {
    public var name: String
    /// Absolute paths, resolved against the station directory.
    public var cert: String
    public var key: String
    public var chain: String?
    public var passphraseFile: String?
    public var status: CAStatus
    /// Development only: accept a CA key file that is not encrypted (every command then warns).
    public var allowUnencryptedKey: Bool
}

/// The parsed `station.toml`: station identity, ledger, CAs and profiles. Unknown keys are refused so that a typo
/// never falls back to a default silently.
public struct StationConfig: Sendable {
    public static let fileName = "station.toml"

    public var directory: String
    public var stationID: String
    public var ledger: LedgerLocation
    public var operatorName: String?
    public var caExpiryWarningDays: Int
    public var cas: [String: CAConfig]
    public var profiles: [String: Profile]
    /// `[fixtures.NAME]`: where devices are plugged in (`keyline run`).
    public var fixtures: [String: FixtureConfig] = [:]
    /// `[daemon]`: timeouts, rate limit, alarm and log of `keyline run`.
    public var daemon = DaemonSettings()
    /// How to reach a postgres:// ledger.
    public var postgres = PostgresSettings()

    /// Reads and checks `DIR/station.toml`. Throws ``KeylineError/Code/configuration`` with the file, section and key.
    public static func load(directory: String) throws -> StationConfig {
        let path = (directory as NSString).appendingPathComponent(fileName)
        guard let data = FileManager.default.contents(atPath: path) else {
            if FileManager.default.fileExists(atPath: path) {
                throw KeylineError(.ioError, "cannot read \(path)")
            }
            throw KeylineError(
                .configuration,
                "no station at \(directory): \(fileName) not found (use --station DIR, set KEYLINE_STATION, or run 'keyline init DIR')"
            )
        }
        return try parse(String(decoding: data, as: UTF8.self), directory: directory)
    }

    /// Parses configuration text; `directory` anchors relative paths.
    public static func parse(_ text: String, directory: String) throws -> StationConfig {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw KeylineError(.configuration, "\(fileName) line \(error.source.begin.line): \(error.description)")
        } catch {
            throw KeylineError(.configuration, "\(fileName): \(error)")
        }
        let dir = (directory as NSString).standardizingPath
        var top = Section(table: table, name: "top level")
        let stationID = try top.requiredString("station_id")
        let ledgerText = try top.requiredString("ledger")
        let operatorName = try top.string("operator").flatMap { $0.isEmpty ? nil : $0 }
        let warnDays = try top.int("ca_expiry_warning_days") ?? 30
        let casTable = try top.table("cas")
        let profilesTable = try top.table("profiles")
        let ledgerPasswordFile = try top.string("ledger_password_file")
        let ledgerSSLMode = try top.string("ledger_sslmode")
        let ledgerCAFile = try top.string("ledger_ca_file")
        let fixturesTable = try top.table("fixtures")
        let daemonTable = try top.table("daemon")
        try top.refuseUnknown()

        guard !stationID.isEmpty else { throw KeylineError(.configuration, "\(fileName): station_id is empty") }
        // It is written into checkpoints, one field per line, and into every record: printable text only.
        guard stationID.count <= 128,
            !stationID.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw KeylineError(
                .configuration,
                "\(fileName): station_id must be at most 128 characters without line breaks or control characters")
        }
        let ledger: LedgerLocation
        if ledgerText.hasPrefix("sqlite:") {
            let p = String(ledgerText.dropFirst("sqlite:".count))
            guard !p.isEmpty else { throw KeylineError(.configuration, "\(fileName): ledger 'sqlite:' names no file") }
            ledger = .sqlite(path: resolve(p, in: dir))
        } else if ledgerText.hasPrefix("postgres://") || ledgerText.hasPrefix("postgresql://") {
            guard URLComponents(string: ledgerText)?.password == nil else {
                throw KeylineError(
                    .configuration,
                    "\(fileName): ledger URL carries a password; put it in ledger_password_file (or the systemd credential keyline-ledger-password), never in station.toml"
                )
            }
            ledger = .postgres(url: ledgerText)
        } else {
            throw KeylineError(
                .configuration,
                "\(fileName): ledger '\(ledgerText)' must look like \"sqlite:ledger.sqlite\" or \"postgres://USER@HOST:PORT/DB\""
            )
        }
        var postgres = PostgresSettings()
        postgres.passwordFile = ledgerPasswordFile.map { resolve($0, in: dir) }
        postgres.caFile = ledgerCAFile.map { resolve($0, in: dir) }
        if let mode = ledgerSSLMode {
            guard let m = PostgresSettings.SSLMode(rawValue: mode) else {
                throw KeylineError(
                    .configuration,
                    "\(fileName): ledger_sslmode '\(mode)' must be one of \(PostgresSettings.SSLMode.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            postgres.sslMode = m
        }
        if case .sqlite = ledger, ledgerPasswordFile != nil || ledgerSSLMode != nil || ledgerCAFile != nil {
            throw KeylineError(
                .configuration,
                "\(fileName): ledger_password_file, ledger_sslmode and ledger_ca_file are for a postgres:// ledger")
        }

        var cas: [String: CAConfig] = [:]
        for name in casTable?.keys ?? [] {
            guard let t = casTable?[name]?.table else {
                throw KeylineError(.configuration, "\(fileName): [cas.\(name)] must be a table")
            }
            var s = Section(table: t, name: "[cas.\(name)]")
            let statusText = try s.string("status") ?? "active"
            guard let status = CAStatus(rawValue: statusText) else {
                throw KeylineError(
                    .configuration,
                    "\(fileName): [cas.\(name)] status '\(statusText)' must be \"active\" or \"retired\"")
            }
            cas[name] = CAConfig(
                name: name,
                cert: resolve(try s.requiredString("cert"), in: dir),
                key: resolve(try s.requiredString("key"), in: dir),
                chain: try s.string("chain").map { resolve($0, in: dir) },
                passphraseFile: try s.string("passphrase_file").map { resolve($0, in: dir) },
                status: status,
                allowUnencryptedKey: try s.bool("allow_unencrypted_key") ?? false)
            try s.refuseUnknown()
        }

        var profiles: [String: Profile] = [:]
        for name in profilesTable?.keys ?? [] {
            guard let t = profilesTable?[name]?.table else {
                throw KeylineError(.configuration, "\(fileName): [profiles.\(name)] must be a table")
            }
            var s = Section(table: t, name: "[profiles.\(name)]")
            let caName = try s.requiredString("ca")
            guard cas[caName] != nil else {
                throw KeylineError(
                    .configuration,
                    "\(fileName): [profiles.\(name)] ca = '\(caName)' has no [cas.\(caName)] section (CAs: \(cas.keys.sorted().joined(separator: ", ")))"
                )
            }
            guard cas[caName]?.status == .active else {
                throw KeylineError(
                    .configuration,
                    "\(fileName): [profiles.\(name)] ca = '\(caName)' is retired; point the profile at an active CA")
            }
            var keyTypes: Set<AllowedKeyType> = [.p256]
            if let list = try s.stringArray("key_types") {
                keyTypes = []
                for item in list {
                    guard let k = AllowedKeyType(rawValue: item) else {
                        throw KeylineError(
                            .configuration,
                            "\(fileName): [profiles.\(name)] key_types entry '\(item)' must be one of \(AllowedKeyType.allCases.map(\.rawValue).joined(separator: ", "))"
                        )
                    }
                    keyTypes.insert(k)
                }
                guard !keyTypes.isEmpty else {
                    throw KeylineError(.configuration, "\(fileName): [profiles.\(name)] key_types is empty")
                }
            }
            var profile = Profile(
                name: name,
                caName: caName,
                cnPattern: try s.string("cn_pattern") ?? Profile.defaultCNPattern,
                validityDays: try s.int("validity_days") ?? 3650,
                minValidityDays: try s.int("min_validity_days") ?? 365,
                keyTypes: keyTypes,
                organization: try s.string("subject_organization"),
                organizationalUnit: try s.string("subject_organizational_unit"))
            profile.jitp = try Self.jitpSettings(&s, profile: name, directory: dir)
            profile.line = try Self.lineSettings(&s, profile: name)
            try s.refuseUnknown()
            guard profile.validityDays > 0, profile.minValidityDays >= 0,
                profile.minValidityDays <= profile.validityDays
            else {
                throw KeylineError(
                    .configuration,
                    "\(fileName): [profiles.\(name)] needs validity_days > 0 and 0 <= min_validity_days <= validity_days"
                )
            }
            do {
                _ = try CNRule(pattern: profile.cnPattern)
            } catch let error as KeylineError {
                throw KeylineError(.configuration, "\(fileName): [profiles.\(name)] \(error.reason)")
            }
            profiles[name] = profile
        }
        var fixtures: [String: FixtureConfig] = [:]
        for name in fixturesTable?.keys ?? [] {
            guard let t = fixturesTable?[name]?.table else {
                throw KeylineError(.configuration, "\(fileName): [fixtures.\(name)] must be a table")
            }
            var s = Section(table: t, name: "[fixtures.\(name)]")
            fixtures[name] = try FixtureConfig.parse(&s, name: name, directory: dir, profiles: profiles)
            try s.refuseUnknown()
        }
        var daemon = DaemonSettings()
        if let t = daemonTable {
            var s = Section(table: t, name: "[daemon]")
            daemon = try DaemonSettings.parse(&s, directory: dir)
            try s.refuseUnknown()
        }
        var config = StationConfig(
            directory: dir, stationID: stationID, ledger: ledger, operatorName: operatorName,
            caExpiryWarningDays: warnDays,
            cas: cas, profiles: profiles)
        config.fixtures = fixtures
        config.daemon = daemon
        config.postgres = postgres
        return config
    }

    /// Reads a profile's line keys (`cn_template`, `accept_device_cn`, `allow_reissue`, `rate_per_minute`,
    /// `rate_burst`).
    static func lineSettings(_ s: inout Section, profile name: String) throws -> LineSettings {
        let table = "\(fileName): [profiles.\(name)]"
        var line = LineSettings()
        if let t = try s.string("cn_template") {
            guard t.contains("{hardware_id}") else {
                throw KeylineError(
                    .configuration,
                    "\(table) cn_template '\(t)' must contain {hardware_id} (each device needs its own CN)")
            }
            line.cnTemplate = t
        }
        line.acceptDeviceCN = try s.bool("accept_device_cn") ?? false
        line.allowReissue = try s.bool("allow_reissue") ?? false
        if let r = try s.number("rate_per_minute") {
            guard r > 0 else { throw KeylineError(.configuration, "\(table) rate_per_minute must be > 0") }
            line.ratePerMinute = r
        }
        if let b = try s.int("rate_burst") {
            guard b >= 1 else { throw KeylineError(.configuration, "\(table) rate_burst must be >= 1") }
            line.rateBurst = b
        }
        return line
    }

    /// Warnings for a configuration that is allowed but unsafe: a CA whose key may be unencrypted.
    public var warnings: [String] {
        cas.values.filter(\.allowUnencryptedKey).map(\.name).sorted().map {
            "CA '\($0)' allows an unencrypted key (allow_unencrypted_key = true): development use only"
        }
    }

    /// The operator recorded with a certificate: `option` (`--operator`), else `KEYLINE_OPERATOR`, else `operator`
    /// in station.toml, else the login name.
    public func operatorName(
        option: String?, environment: [String: String] = ProcessInfo.processInfo.environment
    )
        -> String
    {
        if let option, !option.isEmpty { return option }
        if let value = environment["KEYLINE_OPERATOR"], !value.isEmpty { return value }
        if let operatorName { return operatorName }
        return environment["USER"] ?? environment["LOGNAME"] ?? "unknown"
    }

    /// The named profile, or `default`; throws ``KeylineError/Code/configuration`` naming the ones that exist.
    public func profile(_ name: String?) throws -> Profile {
        let wanted = name ?? "default"
        guard let p = profiles[wanted] else {
            let known = profiles.keys.sorted().joined(separator: ", ")
            throw KeylineError(
                .configuration,
                "no profile '\(wanted)' in \(Self.fileName) (profiles: \(known.isEmpty ? "none" : known))")
        }
        return p
    }

    /// Reads and checks a profile's backend keys; every error names the file, the table, the key and what is allowed.
    static func jitpSettings(_ s: inout Section, profile name: String, directory: String) throws -> JITPSettings {
        let table = "\(fileName): [profiles.\(name)]"
        func prn(_ key: String, type: String) throws -> PRN? {
            guard let text = try s.string(key) else { return nil }
            switch PRN.parse(text, ofType: type) {
            case .success(let value): return value
            case .failure(let e): throw KeylineError(.configuration, "\(table) \(key): \(e.reason)")
            }
        }
        var settings = JITPSettings()
        settings.productName = try s.string("product_name")
        if settings.productName?.isEmpty == true {
            throw KeylineError(.configuration, "\(table) product_name is empty")
        }
        settings.productPRN = try prn("product_prn", type: "product")
        settings.cohortPRN = try prn("cohort_prn", type: "cohort")
        if let p = settings.productPRN, let c = settings.cohortPRN, p.organization != c.organization {
            throw KeylineError(
                .configuration,
                "\(table) product_prn and cohort_prn belong to different organizations (\(p.organization), \(c.organization)); one profile serves one organization"
            )
        }
        settings.tags = try s.stringArray("tags") ?? []
        for tag in settings.tags {
            if let why = JITPSettings.checkTag(tag) {
                throw KeylineError(
                    .configuration, "\(table) tags: \(why); tags are non-empty and hold no spaces or commas")
            }
        }
        if let target = try s.string("target") {
            guard target.range(of: "^[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+){1,3}$", options: .regularExpression) != nil else {
                throw KeylineError(
                    .configuration,
                    "\(table) target '\(target)' is not a target triplet such as aarch64-unknown-linux-gnu")
            }
            settings.target = target
        }
        settings.description = try s.string("jitp_description")
        if let template = try s.string("description_template") {
            var source = template
            if template.hasPrefix("@") {
                let path = resolve(String(template.dropFirst()), in: directory)
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw KeylineError(.configuration, "\(table) description_template file \(path) cannot be read")
                }
                source = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
            }
            do {
                _ = try DescriptionTemplate(source)
            } catch let e as KeylineError {
                throw KeylineError(.configuration, "\(table) \(e.reason)")
            }
            settings.descriptionTemplate = source
        }
        return settings
    }

    static func resolve(_ path: String, in dir: String) -> String {
        path.hasPrefix("/") ? path : (dir as NSString).appendingPathComponent(path)
    }
}

/// Reads one TOML table, remembering which keys were read so the rest can be refused as unknown.
struct Section {
    let table: TOMLTable
    let name: String
    var used: Set<String> = []

    init(table: TOMLTable, name: String) {
        self.table = table
        self.name = name
    }

    private func wrongType(_ key: String, _ type: String) -> KeylineError {
        KeylineError(.configuration, "\(StationConfig.fileName): \(name) key '\(key)' must be \(type)")
    }

    mutating func string(_ key: String) throws -> String? {
        used.insert(key)
        guard let v = table[key] else { return nil }
        guard let s = v.string else { throw wrongType(key, "a string") }
        return s
    }

    mutating func requiredString(_ key: String) throws -> String {
        guard let s = try string(key) else {
            throw KeylineError(.configuration, "\(StationConfig.fileName): \(name) is missing '\(key)'")
        }
        return s
    }

    mutating func int(_ key: String) throws -> Int? {
        used.insert(key)
        guard let v = table[key] else { return nil }
        guard let i = v.int else { throw wrongType(key, "an integer") }
        return i
    }

    /// An integer or a float, as a Double.
    mutating func number(_ key: String) throws -> Double? {
        used.insert(key)
        guard let v = table[key] else { return nil }
        if let i = v.int { return Double(i) }
        guard let d = v.double else { throw wrongType(key, "a number") }
        return d
    }

    mutating func bool(_ key: String) throws -> Bool? {
        used.insert(key)
        guard let v = table[key] else { return nil }
        guard let b = v.bool else { throw wrongType(key, "true or false") }
        return b
    }

    mutating func table(_ key: String) throws -> TOMLTable? {
        used.insert(key)
        guard let v = table[key] else { return nil }
        guard let t = v.table else { throw wrongType(key, "a table") }
        return t
    }

    mutating func stringArray(_ key: String) throws -> [String]? {
        used.insert(key)
        guard let v = table[key] else { return nil }
        guard let a = v.array else { throw wrongType(key, "an array of strings") }
        return try a.map { item in
            guard let s = item.string else { throw wrongType(key, "an array of strings") }
            return s
        }
    }

    func refuseUnknown() throws {
        for key in table.keys.sorted() where !used.contains(key) {
            throw KeylineError(
                .configuration,
                "\(StationConfig.fileName): unknown key '\(key)' in \(name) (allowed: \(used.sorted().joined(separator: ", ")))"
            )
        }
    }
}
