import Foundation

/// How long a CA can still issue, and what to warn its operators about. Pure: the caller passes the time.
public struct CAHealth: Sendable, Equatable {
    /// Whole days until the CA's notAfter (negative once expired).
    public var daysLeft: Int
    /// Days left minus the largest `min_validity_days` of the active profiles using the CA: after that, those
    /// profiles refuse every request. Nil for a retired CA, which issues nothing anyway.
    public var issuingDaysLeft: Int?
    /// One line for stderr, nil when all is well.
    public var warning: String?
    /// Whether issuance under the CA is possible now for every profile using it: the same exact-time test the
    /// issuer applies (now + min_validity_days must not pass the CA's notAfter). False for a retired CA.
    public var canIssue: Bool

    /// Assesses `ca` for `ca show` and monitoring.
    ///
    /// - Parameters:
    ///   - active: false for a retired CA (it only has to stay known, so its expiry is not a problem).
    ///   - profileMinValidityDays: `min_validity_days` of every profile that uses the CA (empty when none does).
    ///   - warningDays: `ca_expiry_warning_days`.
    public init(ca: IssuingCA, active: Bool, profileMinValidityDays: [Int], warningDays: Int, now: Date) {
        let name = ca.name
        daysLeft = ca.daysLeft(at: now)
        guard active else {
            issuingDaysLeft = nil
            warning = nil
            canIssue = false
            return
        }
        let need = profileMinValidityDays.max() ?? 0
        let issuing = daysLeft - need
        issuingDaysLeft = issuing
        let exactlyIssuable =
            now >= ca.certificate.notValidBefore
            && now.addingTimeInterval(Double(need) * 86400) <= ca.certificate.notValidAfter
        canIssue = exactlyIssuable && IssuingCA.checkIsCA(ca.certificate) == .accept
        func days(_ n: Int) -> String { n == 1 ? "1 day" : "\(n) days" }
        if case .refuse(_, let reason) = IssuingCA.checkIsCA(ca.certificate) {
            warning = "CA '\(name)' cannot issue: \(reason)"
        } else if now < ca.certificate.notValidBefore {
            warning = "CA '\(name)' is not valid before \(Timestamp.iso(ca.certificate.notValidBefore))"
        } else if daysLeft < 0 {
            warning = "CA '\(name)' has expired; retire it (status = \"retired\") and move its profiles to a new CA"
        } else if !exactlyIssuable {
            warning =
                "CA '\(name)' can no longer meet min_validity_days (\(need)) of its profiles: issuance under it is refused"
        } else if issuing < warningDays {
            warning =
                need > 0
                ? "CA '\(name)' can issue for \(days(max(issuing, 0))) more (expires in \(days(daysLeft)), profiles need \(days(need)) of validity)"
                : "CA '\(name)' expires in \(days(daysLeft))"
        } else {
            warning = nil
        }
    }
}
