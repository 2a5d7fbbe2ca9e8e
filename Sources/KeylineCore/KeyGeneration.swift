import Crypto

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Bytes from the kernel's CSPRNG, up to 256 in one system call.
///
/// The same source as swift-crypto's `SymmetricKey(size:)` and Swift's `SystemRandomNumberGenerator`, which ask
/// getrandom(2) for 8 bytes at a time: a key's scalar and a serial took seven system calls a device that way.
/// getentropy(3) is getrandom(2) without flags: it waits until the kernel's pool is seeded, and is not cut short.
public enum SystemRandom {
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { buffer in
            var filled = 0
            while filled < count {
                let n = min(256, count - filled)
                // It fails only without getrandom(2) (Linux before 3.17, or a seccomp filter refusing it), where
                // Swift's own generator stops the process too; never hand out fewer random bytes than asked.
                guard getentropy(buffer.baseAddress! + filled, n) == 0 else {
                    fatalError("getentropy(3) failed: errno \(errno)")
                }
                filled += n
            }
        }
        return out
    }

    /// Overwrites key material with zeros in a way the compiler keeps (explicit_bzero(3)).
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { if let base = $0.baseAddress { explicit_bzero(base, $0.count) } }
    }
}

/// Station-made device keys.
public enum DeviceKeys {
    /// A new P-256 key: a scalar of 32 bytes from the kernel's CSPRNG (``SystemRandom``; drawn again in the 2^-32
    /// case that it is not below the group order, or zero), and its public point computed from it.
    ///
    /// `P256.Signing.PrivateKey()` does the same and then runs FIPS 140's pairwise consistency test (a full key check,
    /// a signature and its verification) on every key, and by default draws again until the key is
    /// compact-representable: a key and one signature took 280 µs here that way, 52 µs this way (keyline-rawbench,
    /// one core). OpenSSL's default provider makes EC keys without that test too (it runs only in its FIPS
    /// provider). Keyline is not a FIPS module, and the public key is computed from the scalar, so the test has
    /// nothing to find; every issued certificate's key is checked against the staged private key when a batch
    /// resumes.
    public static func p256() -> P256.Signing.PrivateKey {
        var (key, scalar) = p256WithScalar()
        SystemRandom.wipe(&scalar)
        return key
    }

    /// ``p256()`` and the 32-byte scalar it was made from (for encoding the key without computing its point's
    /// encoding again; see ``CertificateFactory/pkcs8P256(scalar:x963:)``). The scalar is the private key: the
    /// caller wipes it (``SystemRandom/wipe(_:)``) once it is encoded.
    public static func p256WithScalar() -> (key: P256.Signing.PrivateKey, scalar: [UInt8]) {
        while true {
            var scalar = SystemRandom.bytes(32)
            if let key = try? P256.Signing.PrivateKey(rawRepresentation: scalar) { return (key, scalar) }
            SystemRandom.wipe(&scalar)
        }
    }
}
