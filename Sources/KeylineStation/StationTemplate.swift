/// The commented `station.toml` that `keyline init` writes.
enum StationTemplate {
    static func render(stationID: String) -> String {
        """
        # Keyline station configuration.
        # Paths are relative to this directory unless absolute. Unknown keys are refused, so a typo never falls
        # back to a default silently. Check with: keyline ca show, keyline ledger verify.

        # Unique per station; recorded in every ledger record and event. Do not change it once issuing.
        station_id = "\(stationID)"

        # Where every issued certificate is recorded (SQLite, WAL, synchronous=FULL).
        ledger = "sqlite:ledger.sqlite"

        # Operator recorded with each certificate when neither --operator nor KEYLINE_OPERATOR is given.
        # operator = "line-1"

        # `keyline ca show` warns when a CA can issue for fewer days than this: its days left minus the largest
        # min_validity_days of the profiles using it (after that, those profiles refuse every request).
        ca_expiry_warning_days = 30

        # A development CA made by `keyline init`. Its root key was discarded after signing the issuing CA.
        # For production, import your factory CA: keyline ca import --name NAME --cert CA.pem --key KEY.pem
        [cas.dev]
        cert = "ca/dev/ca.pem"              # the issuing CA (CA:TRUE, pathlen:0): register this one with the backend
        key = "ca/dev/ca.key"               # encrypted PKCS#8, mode 0600
        chain = "ca/dev/root.pem"           # certificates above the issuing CA
        passphrase_file = "secrets/dev.passphrase"   # mode 0600; or the systemd credential keyline-ca-passphrase
        status = "active"                   # "retired" CAs sign nothing more but stay known
        # allow_unencrypted_key = false     # development only

        # The profile used when --profile is not given.
        [profiles.default]
        ca = "dev"
        # A CN must match this in full (and is never longer than 64 characters, without '/', '*', spaces or
        # control characters, whatever the pattern says).
        cn_pattern = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'
        validity_days = 3650                # capped at the CA's own notAfter
        min_validity_days = 365             # refuse when the CA cannot give at least this much
        key_types = ["p256"]                # also allowed: "p384", "rsa2048" (RSA of 2048 bits or more), "rsa3072", "rsa4096"
        # subject_organization = "Example Devices Ltd"          # fixed O in every device subject
        # subject_organizational_unit = "Line 1"              # fixed OU

        # What the backend assigns to these devices (keyline manifest jitp / manifest devices):
        # product_name = "gateway"                                   # JITP settings name the product
        # product_prn = "prn:1:<organization-uuid>:product:<uuid>"   # the device import manifest needs this
        # cohort_prn = "prn:1:<organization-uuid>:cohort:<uuid>"     # same organization as the product
        # tags = ["factory-a", "line-1"]                             # no spaces or commas
        # target = "aarch64-unknown-linux-gnu"
        # jitp_description = "Provisioned from factory line 1"
        # description_template = "{{product_name}} {{cn}} ({{station_id}}, {{issued_at}})"   # or "@templates/x.mustache"

        """
    }
}
