import Crypto

/// Station-made device keys.
public enum DeviceKeys {
    /// A new P-256 key: a scalar of 32 bytes from BoringSSL's CSPRNG (drawn again in the 2^-32 case that it is not
    /// below the group order, or zero), and its public point computed from it.
    ///
    /// `P256.Signing.PrivateKey()` does the same and then runs FIPS 140's pairwise consistency test (a full key check,
    /// a signature and its verification) on every key, and by default draws again until the key is
    /// compact-representable: a key and one signature took 280 µs here that way, 52 µs this way (keyline-rawbench,
    /// one core). OpenSSL's default provider makes EC keys without that test too (it runs only in its FIPS
    /// provider). Keyline is not a FIPS module, and the public key is computed from the scalar, so the test has
    /// nothing to find; every issued certificate's key is checked against the staged private key when a batch
    /// resumes.
    public static func p256() -> P256.Signing.PrivateKey {
        while true {
            let scalar = SymmetricKey(size: .bits256)
            if let key = try? scalar.withUnsafeBytes({ try P256.Signing.PrivateKey(rawRepresentation: $0) }) {
                return key
            }
        }
    }
}
