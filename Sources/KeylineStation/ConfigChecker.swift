import Foundation
import KeylineCore
import KeylineCustody

/// `keyline config check`: everything that can be checked without a passphrase.
public enum ConfigChecker {
    public struct Report: Sendable {
        /// Things worth an operator's attention that do not stop issuance (yet).
        public var warnings: [String] = []
    }

    /// Checks every CA's certificate files and, for active CAs, that their key and passphrase files would pass the
    /// key guard and that the key is encrypted (or allowed not to be). Throws the first hard problem.
    public static func check(_ config: StationConfig, now: Date) throws -> Report {
        var report = Report()
        report.warnings += config.warnings
        for name in config.cas.keys.sorted() {
            let c = config.cas[name]!
            let ca = try CALoader.certificateOnly(c)
            if c.status == .active {
                if case .refuse(_, let reason) = IssuingCA.checkIsCA(ca.certificate) {
                    throw KeylineError(.dataError, "CA '\(name)' certificate \(c.cert): \(reason)")
                }
                let pem = try FileGuard.readSecretFile(c.key, what: "CA key")
                if PrivateKeyFile.protection(of: pem) == .unencrypted && !c.allowUnencryptedKey {
                    throw KeylineError(
                        .keyGuard, "CA key \(c.key) is not encrypted and [cas.\(name)] does not allow_unencrypted_key")
                }
                if let p = c.passphraseFile { try FileGuard.checkSecretFile(p, what: "passphrase file") }
            }
            let minimums = config.profiles.values.filter { $0.caName == name }.map(\.minValidityDays)
            let health = CAHealth(
                ca: ca, active: c.status == .active, profileMinValidityDays: minimums,
                warningDays: config.caExpiryWarningDays, now: now)
            if c.status == .active, !health.canIssue, !minimums.isEmpty {
                let users = config.profiles.values.filter { $0.caName == name }.map(\.name).sorted()
                throw KeylineError(
                    .configuration,
                    "profile(s) \(users.joined(separator: ", ")) cannot issue: \(health.warning ?? "CA '\(name)' cannot issue"); import a new CA and point the profiles at it"
                )
            }
            if let w = health.warning { report.warnings.append(w) }
        }
        try StationSigningKey.check(in: config.directory)
        return report
    }
}
