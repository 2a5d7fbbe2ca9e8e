import Crypto
import Foundation

/// Hex and digest helpers shared by every module.
public enum Hex {
    /// Upper-case hex of `bytes`, as the backend shows fingerprints.
    public static func upper<B: Sequence>(_ bytes: B) -> String where B.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for b in bytes {
            out.append(hexDigits[Int(b >> 4)])
            out.append(hexDigits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Lower-case hex of `bytes`.
    public static func lower<B: Sequence>(_ bytes: B) -> String where B.Element == UInt8 {
        upper(bytes).lowercased()
    }

    /// Parses hex (either case, optional `:` separators); nil when not hex.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8.filter { $0 != UInt8(ascii: ":") })
        guard chars.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    /// SHA-256 of `bytes` as upper-case hex (64 characters).
    public static func sha256<B: DataProtocol>(_ bytes: B) -> String {
        upper(SHA256.hash(data: bytes))
    }

    /// The same for a byte array, without generic dispatch (a hot path: reconcile hashes a million certificates).
    public static func sha256(_ bytes: [UInt8]) -> String {
        let digest = bytes.withUnsafeBytes { SHA256.hash(data: $0) }
        return digest.withUnsafeBytes { raw in
            String(unsafeUninitializedCapacity: raw.count * 2) { out in
                var i = 0
                for b in raw {
                    out[i] = hexDigits[Int(b >> 4)]
                    out[i + 1] = hexDigits[Int(b & 0xF)]
                    i += 2
                }
                return i
            }
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789ABCDEF".utf8)

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
