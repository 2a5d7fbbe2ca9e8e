import Crypto
import Foundation
import SwiftASN1
import X509

/// A CA as the issuance core sees it: its certificate, what is above it, and the identifiers derived from it.
public struct IssuingCA: Sendable {
    /// The name of the CA in `station.toml` (`[cas.NAME]`).
    public var name: String
    public var certificate: Certificate
    /// The certificates above the issuing CA, nearest first (the root last); may be empty.
    public var chain: [Certificate]
    /// The DER of `certificate`.
    public var der: [UInt8]
    /// The CA's Subject Key Identifier, which every leaf's AKI repeats.
    public var subjectKeyIdentifier: [UInt8]
    /// SHA-256 of the CA certificate's DER, upper-case hex.
    public var fingerprint: String

    /// Wraps a CA certificate; throws ``KeylineError/Code/configuration`` when it lacks a SKI.
    public init(name: String, certificate: Certificate, chain: [Certificate] = []) throws {
        self.name = name
        self.certificate = certificate
        self.chain = chain
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        self.der = serializer.serializedBytes
        self.fingerprint = Hex.sha256(der)
        guard let ski = try certificate.extensions.subjectKeyIdentifier else {
            throw KeylineError(.configuration, "CA '\(name)' certificate has no Subject Key Identifier")
        }
        self.subjectKeyIdentifier = Array(ski.keyIdentifier)
    }

    /// Checks the certificate is fit to be an issuing CA: CA:TRUE, keyCertSign, a SKI. Returns a verdict naming
    /// what is missing.
    public static func checkIsCA(_ certificate: Certificate) -> PolicyVerdict {
        guard let bc = try? certificate.extensions.basicConstraints, case .isCertificateAuthority(let pathLength) = bc
        else {
            return .refuse(rule: "ca-certificate", reason: "basicConstraints CA:TRUE is missing")
        }
        // The backend finds a device's CA by the leaf's AKI: the registered CA must be the direct issuer, an
        // issuing CA that signs no further CAs.
        guard pathLength == 0 else {
            let shown = pathLength.map(String.init) ?? "unlimited"
            return .refuse(
                rule: "ca-certificate",
                reason:
                    "basicConstraints pathlen is \(shown); the issuing CA must have pathlen:0 (it signs devices directly)"
            )
        }
        guard let ku = try? certificate.extensions.keyUsage, ku.keyCertSign else {
            return .refuse(rule: "ca-certificate", reason: "keyUsage keyCertSign is missing")
        }
        guard (try? certificate.extensions.subjectKeyIdentifier) != nil else {
            return .refuse(rule: "ca-certificate", reason: "subjectKeyIdentifier is missing")
        }
        return .accept
    }

    /// Checks the CA is inside its validity at `now`.
    public func checkValidity(at now: Date) -> PolicyVerdict {
        if now < certificate.notValidBefore {
            return .refuse(
                rule: "ca-validity",
                reason: "CA '\(name)' is not valid before \(Timestamp.iso(certificate.notValidBefore))")
        }
        if now > certificate.notValidAfter {
            return .refuse(
                rule: "ca-validity", reason: "CA '\(name)' expired on \(Timestamp.iso(certificate.notValidAfter))")
        }
        return .accept
    }

    /// Whole days from `now` until the CA's notAfter (negative once expired).
    public func daysLeft(at now: Date) -> Int {
        Int((certificate.notValidAfter.timeIntervalSince(now) / 86400).rounded(.down))
    }
}

/// Time formatting shared by the ledger and the CLI: ISO 8601, UTC, whole seconds.
public enum Timestamp {
    public static func iso(_ date: Date) -> String {
        date.formatted(
            .iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: false).timeSeparator(
                .colon
            ).timeZone(separator: .omitted))
    }

    /// ISO 8601 with milliseconds, for event and record timestamps. Built from the integer milliseconds, so a
    /// timestamp read back from the ledger prints exactly as it was stored.
    public static func isoMillis(_ date: Date) -> String {
        let ms = millis(date)
        let whole = Date(timeIntervalSince1970: Double(ms.floorDiv(1000)))
        let frac = ms - ms.floorDiv(1000) * 1000
        let base = iso(whole)
        let fracText = String(frac)
        return String(base.dropLast()) + "." + String(repeating: "0", count: 3 - fracText.count) + fracText + "Z"
    }

    /// Unix time in whole milliseconds, as the ledger stores timestamps.
    public static func millis(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    /// Unix time in whole seconds, as the ledger stores a certificate's validity.
    public static func seconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970.rounded(.down)) }
    /// `date` rounded to the millisecond, exactly as it reads back from the ledger.
    public static func wholeMillis(_ date: Date) -> Date { fromMillis(millis(date)) }
    /// `date` truncated to the second, as X.509 validity and the ledger keep it.
    public static func wholeSeconds(_ date: Date) -> Date { Date(timeIntervalSince1970: Double(seconds(date))) }
    /// The date of a millisecond timestamp.
    public static func fromMillis(_ ms: Int64) -> Date { Date(timeIntervalSince1970: Double(ms) / 1000) }

    /// Parses what ``iso(_:)`` or ``isoMillis(_:)`` wrote.
    public static func parse(_ text: String) -> Date? {
        if let d = try? Date(text, strategy: .iso8601) { return d }
        return try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

extension Int64 {
    /// Division rounding toward negative infinity.
    func floorDiv(_ d: Int64) -> Int64 { self >= 0 ? self / d : -((-self + d - 1) / d) }
}
