/// A named issuance profile: which CA signs, what a CN may look like, which keys are allowed, how long a leaf lives.
///
/// Profiles are data (cfssl's `config.Signing.Profiles`); the station reads them from `station.toml`.
public struct Profile: Sendable, Hashable {
    /// The default CN rule: starts with a letter or digit, then letters, digits, `.`, `_`, `:`, `-`; 1–64 characters.
    public static let defaultCNPattern = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"

    public var name: String
    /// The name of the CA (`[cas.NAME]`) that signs under this profile.
    public var caName: String
    /// A regular expression every CN must match in full.
    public var cnPattern: String
    /// The leaf's intended lifetime; capped by the CA's own notAfter.
    public var validityDays: Int
    /// A leaf whose capped lifetime would fall below this is refused.
    public var minValidityDays: Int
    /// Keys accepted from CSRs.
    public var keyTypes: Set<AllowedKeyType>
    /// Fixed subject attributes added after the CN.
    public var organization: String?
    public var organizationalUnit: String?

    /// The smallest RSA modulus allowed, nil when the profile allows no RSA key.
    public var rsaMinimumBits: Int? { keyTypes.compactMap(\.rsaMinimumBits).min() }

    public init(
        name: String,
        caName: String,
        cnPattern: String = Profile.defaultCNPattern,
        validityDays: Int = 3650,
        minValidityDays: Int = 365,
        keyTypes: Set<AllowedKeyType> = [.p256],
        organization: String? = nil,
        organizationalUnit: String? = nil
    ) {
        self.name = name
        self.caName = caName
        self.cnPattern = cnPattern
        self.validityDays = validityDays
        self.minValidityDays = minValidityDays
        self.keyTypes = keyTypes
        self.organization = organization
        self.organizationalUnit = organizationalUnit
    }
}
