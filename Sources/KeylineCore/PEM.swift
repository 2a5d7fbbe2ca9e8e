/// PEM encoding (RFC 7468): base64 in lines of 64 characters between BEGIN and END lines, byte for byte what
/// swift-asn1's `PEMDocument.pemString` gives, without its per-character String indexing (bulk issuance writes
/// two PEM documents per certificate, and that indexing was the largest Swift cost left on the issuing thread).
public enum PEM {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// `-----BEGIN label-----`, the base64 of `der` in lines of 64, `-----END label-----`; no final newline.
    public static func encode(_ der: [UInt8], label: String) -> String {
        let begin = Array("-----BEGIN \(label)-----\n".utf8)
        let end = Array("-----END \(label)-----".utf8)
        let chars = (der.count + 2) / 3 * 4
        var out: [UInt8] = []
        out.reserveCapacity(begin.count + chars + chars / 64 + 1 + end.count)
        out.append(contentsOf: begin)
        var column = 0
        func emit(_ c: UInt8) {
            out.append(c)
            column += 1
            if column == 64 {
                out.append(UInt8(ascii: "\n"))
                column = 0
            }
        }
        var i = 0
        while i + 3 <= der.count {
            let n = UInt32(der[i]) << 16 | UInt32(der[i + 1]) << 8 | UInt32(der[i + 2])
            emit(alphabet[Int(n >> 18 & 63)])
            emit(alphabet[Int(n >> 12 & 63)])
            emit(alphabet[Int(n >> 6 & 63)])
            emit(alphabet[Int(n & 63)])
            i += 3
        }
        let rest = der.count - i
        if rest > 0 {
            let n = UInt32(der[i]) << 16 | (rest == 2 ? UInt32(der[i + 1]) << 8 : 0)
            emit(alphabet[Int(n >> 18 & 63)])
            emit(alphabet[Int(n >> 12 & 63)])
            emit(rest == 2 ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            emit(UInt8(ascii: "="))
        }
        if column != 0 { out.append(UInt8(ascii: "\n")) }
        out.append(contentsOf: end)
        return String(decoding: out, as: UTF8.self)
    }
}
