import Foundation

/// PEM text without a round trip through a parser: base64 of the DER in 64-character lines.
public enum PEMText {
    public static func encode(_ der: [UInt8], label: String = "CERTIFICATE") -> String {
        let b64 = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN \(label)-----\n\(b64)\n-----END \(label)-----\n"
    }
}

/// Big-endian bytes as a decimal string (CA serials for people, as the backend's console shows them).
public enum DecimalText {
    public static func string<B: Collection>(_ bytes: B) -> String where B.Element == UInt8 {
        var digits: [UInt8] = [0]  // little-endian base-10 digits
        for byte in bytes {
            var carry = Int(byte)
            for i in digits.indices {
                let v = Int(digits[i]) * 256 + carry
                digits[i] = UInt8(v % 10)
                carry = v / 10
            }
            while carry > 0 {
                digits.append(UInt8(carry % 10))
                carry /= 10
            }
        }
        while digits.count > 1 && digits.last == 0 { digits.removeLast() }
        return String(digits.reversed().map { Character(String($0)) })
    }
}

/// The CA registration the backend accepts: its JSON body and the equivalent CLI flags.
public struct JITPRegistration: Sendable, Equatable, Encodable {
    /// The backend's JITP settings object, with exactly its keys; optional ones are left out when unset.
    public struct Settings: Sendable, Equatable, Encodable {
        public var description: String
        public var tags: [String]
        public var product_name: String
        public var cohort_prn: String?
        public var target: String?
    }

    /// base64 of the CA certificate's PEM.
    public var certificate: String
    /// base64 of the verification certificate's PEM (left out when none was given).
    public var verification_certificate: String?
    public var description: String
    public var jitp: Settings

    /// Builds the registration for a profile's CA. Refuses (configuration) when the profile lacks what the backend
    /// requires: a product name and a JITP description (`jitp_description`, else the description template's text).
    public init(
        caPEM: String, verificationPEM: String?, description: String, settings s: JITPSettings, profile: String
    ) throws {
        guard let product = s.productName else {
            throw KeylineError(
                .configuration, "profile '\(profile)' has no product_name, which the backend's JITP settings require")
        }
        guard let jitpDescription = s.description ?? s.descriptionTemplate else {
            throw KeylineError(
                .configuration,
                "profile '\(profile)' has neither jitp_description nor description_template for the JITP description")
        }
        certificate = Data(caPEM.utf8).base64EncodedString()
        verification_certificate = verificationPEM.map { Data($0.utf8).base64EncodedString() }
        self.description = description
        jitp = Settings(
            description: jitpDescription, tags: s.tags, product_name: product, cohort_prn: s.cohortPRN?.description,
            target: s.target)
    }

    /// The same settings as the backend CLI's flags (`--jitp-*`), one per line, shell-quoted.
    public var cliFlags: [String] {
        var flags = [
            "--certificate-path ca.pem",
            "--description \(Self.quote(description))",
            "--jitp-description \(Self.quote(jitp.description))",
            "--jitp-tags \(Self.quote(jitp.tags.joined(separator: ",")))",
            "--jitp-product-name \(Self.quote(jitp.product_name))",
        ]
        if verification_certificate != nil { flags.insert("--verification-certificate-path verification.pem", at: 1) }
        if let c = jitp.cohort_prn { flags.append("--jitp-cohort-prn \(Self.quote(c))") }
        if let t = jitp.target { flags.append("--jitp-target \(Self.quote(t))") }
        return flags
    }

    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}

/// One device of the backend's Device Import Manifest, with the audit fields the JSON forms add.
public struct DeviceManifestRow: Sendable, Equatable {
    public var identifier: String
    public var description: String
    public var tags: [String]
    public var productPRN: String
    public var cohortPRN: String
    public var certificates: String
    public var target: String
    public var record: LedgerRecord

    /// The CSV columns, in the backend's order.
    public static let csvHeader = [
        "identifier", "description", "tags", "product_prn", "cohort_prn", "certificates", "target",
    ]

    /// The row's CSV fields, in ``csvHeader`` order (tags comma-joined inside their one field).
    public var csvFields: [String] {
        [identifier, description, tags.joined(separator: ","), productPRN, cohortPRN, certificates, target]
    }

    /// Builds the row for `record`: the attributes fixed at issuance when the record has them, else (records from
    /// before the ledger kept them) `profile`'s current settings and description template.
    public init(record: LedgerRecord, profile: Profile?, template: DescriptionTemplate?) {
        let c = record.content
        self.record = record
        identifier = c.cn
        let a = c.attributes ?? profile.map { Self.attributes(for: c, profile: $0, template: template) }
        description = a?.description ?? ""
        tags = a?.tags ?? []
        // A product the profile lacked at issuance may be filled in from its settings now (the backend needs one).
        productPRN = a?.productPRN ?? profile?.jitp.productPRN?.description ?? ""
        cohortPRN = a?.cohortPRN ?? ""
        target = a?.target ?? ""
        // One certificate per device today; several would be joined by one blank line.
        certificates = PEMText.encode(c.certificateDER).trimmingCharacters(in: .newlines)
    }

    /// The attributes `profile` gives a device issued as `content`: its settings and the rendered description.
    public static func attributes(
        for content: RecordContent, profile: Profile, template: DescriptionTemplate?
    )
        -> DeviceAttributes
    {
        let j = profile.jitp
        return DeviceAttributes(
            description: template?.render(templateFields(content: content, profile: profile)) ?? (j.description ?? ""),
            tags: j.tags, productPRN: j.productPRN?.description, cohortPRN: j.cohortPRN?.description, target: j.target)
    }

    /// The values a description template can use; optional fields that are unset are absent, so a section such
    /// as `{{#hardware_id}}…{{/hardware_id}}` renders only when there is one.
    public static func templateFields(content c: RecordContent, profile: Profile) -> [String: String] {
        var fields = [
            "cn": c.cn, "serial": c.serialHex, "fingerprint": c.certificateFingerprint,
            "not_before": Timestamp.iso(c.notBefore), "not_after": Timestamp.iso(c.notAfter),
            "issued_at": Timestamp.iso(c.createdAt), "station_id": c.stationID, "operator": c.operatorName,
            "profile": c.profile, "ca": c.caName, "key_origin": c.keyOrigin.rawValue,
        ]
        if let v = profile.jitp.productName, !v.isEmpty { fields["product_name"] = v }
        if let v = c.hardwareID, !v.isEmpty { fields["hardware_id"] = v }
        if let v = c.workOrder, !v.isEmpty { fields["work_order"] = v }
        return fields
    }
}
