/// The one error type Keyline's libraries throw: a ``Code`` that decides the exit status, and a one-line reason.
///
/// Equality compares the code only, so tests can assert on the kind of failure without pinning its wording.
/// The reason never contains secret material (passphrases, private keys).
public struct KeylineError: Error, Sendable, CustomStringConvertible, Equatable {
    /// What kind of failure this is; each maps to one documented exit status.
    public enum Code: String, Sendable, CaseIterable {
        /// The command line was wrong (64, EX_USAGE).
        case usage
        /// Input data was malformed: garbage PEM/DER, an unparsable CSR (65, EX_DATAERR).
        case dataError
        /// A service or resource is unavailable: the ledger cannot be opened (69, EX_UNAVAILABLE).
        case unavailable
        /// Reading or writing a file failed, the disk is full (74, EX_IOERR).
        case ioError
        /// A temporary failure worth retrying: the database is locked (75, EX_TEMPFAIL).
        case temporaryFailure
        /// The key guard refused: permissions, symlinks, a wrong passphrase, a key not matching its CA (77, EX_NOPERM).
        case keyGuard
        /// The station's configuration is wrong or incomplete (78, EX_CONFIG).
        case configuration
        /// An issuance policy refused the request; the reason names the rule (3).
        case policyRefusal
        /// The ledger's integrity check failed (4).
        case integrity
        /// A bug or an unexpected state (70, EX_SOFTWARE).
        case internalError
    }

    /// The failure's kind.
    public var code: Code
    /// One line a person can act on.
    public var reason: String
    /// The policy rule that refused, for ``Code/policyRefusal``.
    public var rule: String?

    /// Creates an error of `code` with a one-line `reason`.
    public init(_ code: Code, _ reason: String, rule: String? = nil) {
        self.code = code
        self.reason = reason
        self.rule = rule
    }

    /// A policy refusal naming the rule that refused.
    public static func refused(_ rule: String, _ reason: String) -> KeylineError {
        KeylineError(.policyRefusal, "\(rule): \(reason)", rule: rule)
    }

    /// The process exit status for this error (sysexits where one fits).
    public var exitStatus: Int32 { code.exitStatus }

    public var description: String { reason }

    public static func == (lhs: KeylineError, rhs: KeylineError) -> Bool { lhs.code == rhs.code }
}

extension KeylineError.Code {
    /// The documented exit status of this kind of failure.
    public var exitStatus: Int32 {
        switch self {
        case .usage: 64
        case .dataError: 65
        case .unavailable: 69
        case .internalError: 70
        case .ioError: 74
        case .temporaryFailure: 75
        case .keyGuard: 77
        case .configuration: 78
        case .policyRefusal: 3
        case .integrity: 4
        }
    }
}
