import Foundation

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

    /// What the backend assigns to devices of this profile (JITP settings and the device import manifest).
    public var jitp: JITPSettings = JITPSettings()

    /// How the daemon treats devices on the line under this profile.
    public var line: LineSettings = LineSettings()

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

/// A profile's backend settings: the CA's JITP configuration and what each device's manifest row carries.
public struct JITPSettings: Sendable, Hashable {
    /// `product_name`: the backend names a product in JITP settings (required there).
    public var productName: String?
    /// `product_prn`: the product in the device import manifest.
    public var productPRN: PRN?
    /// `cohort_prn`: the cohort new devices join.
    public var cohortPRN: PRN?
    /// `tags`: non-empty, without spaces or commas.
    public var tags: [String]
    /// `target`: a target triplet such as `aarch64-unknown-linux-gnu`.
    public var target: String?
    /// `jitp_description`: the literal text of the JITP settings' description.
    public var description: String?
    /// `description_template`: rendered per device into the manifest's description.
    public var descriptionTemplate: String?

    public init(
        productName: String? = nil, productPRN: PRN? = nil, cohortPRN: PRN? = nil, tags: [String] = [],
        target: String? = nil, description: String? = nil, descriptionTemplate: String? = nil
    ) {
        self.productName = productName
        self.productPRN = productPRN
        self.cohortPRN = cohortPRN
        self.tags = tags
        self.target = target
        self.description = description
        self.descriptionTemplate = descriptionTemplate
    }

    /// Checks a tag: non-empty, no white space, no comma (the manifest joins tags with commas).
    public static func checkTag(_ tag: String) -> String? {
        if tag.isEmpty { return "a tag is empty" }
        if tag.contains(",") { return "tag '\(tag)' contains a comma" }
        if tag.contains(where: { $0.isWhitespace }) { return "tag '\(tag)' contains white space" }
        return nil
    }
}

/// A profile's rules for devices on the line (`keyline run`): how a CN is chosen and what a returning device gets.
public struct LineSettings: Sendable, Hashable {
    /// `cn_template`: the CN for a hardware id; `{hardware_id}` is replaced by it. Default: the hardware id itself.
    public var cnTemplate: String = "{hardware_id}"
    /// `accept_device_cn`: use the CN a device asks for in IDENTIFY (still checked by `cn_pattern`).
    public var acceptDeviceCN: Bool = false
    /// `allow_reissue`: a known CN that comes back with another key revokes the old certificate (reason
    /// superseded) and gets a new one; without it such a device is refused.
    public var allowReissue: Bool = false
    /// `rate_per_minute` and `rate_burst`: this profile's token bucket (nil: no per-profile limit).
    public var ratePerMinute: Double?
    public var rateBurst: Int?

    public init() {}

    /// The CN the template gives for `hardwareID`.
    public func cn(forHardwareID hardwareID: String) -> String {
        cnTemplate.replacingOccurrences(of: "{hardware_id}", with: hardwareID)
    }
}
