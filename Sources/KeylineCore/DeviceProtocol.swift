import Crypto

/// Keyline device protocol v1: the station and a device exchange text lines over a byte stream (a USB-serial tty, a
/// USB bulk pipe, a socket), and certificates, keys and CSRs as PEM payloads with an explicit length and SHA-256.
/// The full specification, for firmware engineers, is `docs/device-protocol.md`.
///
/// This file holds the pure parts: the frame decoder (bytes in, frames out, in any split), the message model and the
/// encoder. Transports and the station's state machine are built on it.
public enum DeviceProtocol {
    /// The version string of `HELLO`.
    public static let version = "keyline/1"
    /// The longest line (without its terminator) either side sends or accepts.
    public static let maxLineBytes = 1024
    /// The largest payload (a PKCS#8 key plus a certificate chain fits many times over).
    public static let maxPayloadBytes = 65_536

    /// A line's words, split on single spaces; a line announcing a payload ends with `+LENGTH SHA256`.
    public struct Frame: Sendable, Equatable {
        /// The line's words, payload announcement excluded.
        public var words: [String]
        /// The payload that followed the line, when it announced one (checksum verified).
        public var payload: [UInt8]?

        public init(words: [String], payload: [UInt8]? = nil) {
            self.words = words
            self.payload = payload
        }

        /// `key=value` words, percent-decoded (the first occurrence wins).
        public var fields: [String: String] {
            var out: [String: String] = [:]
            for w in words {
                guard let eq = w.firstIndex(of: "=") else { continue }
                let key = String(w[..<eq])
                if out[key] == nil { out[key] = DeviceProtocol.percentDecode(String(w[w.index(after: eq)...])) }
            }
            return out
        }

        /// The bytes that put this frame on the wire: the line, and the payload with its terminator.
        public var encoded: [UInt8] {
            var line = words.joined(separator: " ")
            if let payload {
                line += " +\(payload.count) \(Hex.sha256(payload))"
            }
            var out = Array(line.utf8) + [0x0A]
            if let payload { out += payload + [0x0A] }
            return out
        }
    }

    /// What the decoder could not accept. After each, it resynchronises: at the next line break, or after the
    /// announced payload and its terminator.
    public enum DecodeError: Error, Sendable, Equatable, CustomStringConvertible {
        /// For the operator's console: what was wrong, in words.
        public var description: String {
            switch self {
            case .lineTooLong: "a line longer than \(DeviceProtocol.maxLineBytes) bytes"
            case .notText: "bytes that are not text"
            case .badPayloadHeader(let h): "a bad payload header '\(h.prefix(40))'"
            case .checksumMismatch: "a payload whose SHA-256 does not match"
            case .missingPayloadTerminator: "a payload without its line break"
            case .emptyLine: "an empty line"
            }
        }

        /// A line longer than ``maxLineBytes``; skipped to its end.
        case lineTooLong
        /// A byte outside printable ASCII in a line (control characters other than CR before LF, or non-ASCII).
        case notText
        /// `+LENGTH SHA256` that does not parse, or a length above ``maxPayloadBytes``.
        case badPayloadHeader(String)
        /// The payload's SHA-256 is not the announced one.
        case checksumMismatch(expected: String, actual: String)
        /// The byte after a payload is not a line break.
        case missingPayloadTerminator
        /// An empty line.
        case emptyLine
    }

    /// Turns bytes into frames, whatever the bytes' split. A pure value: feed it, collect what it returns.
    public struct Decoder: Sendable {
        private enum Mode: Sendable {
            case line
            case skippingLine
            case payload(words: [String], length: Int, sha256: String)
            case terminator(words: [String], payload: [UInt8], sha256: String)
        }

        private var mode: Mode = .line
        private var line: [UInt8] = []
        private var payload: [UInt8] = []
        private var badText = false

        public init() {}

        /// Whether the decoder is in the middle of a frame (a transport closing now cut it).
        public var isMidFrame: Bool {
            if case .line = mode { return !line.isEmpty }
            return true
        }

        /// Feeds bytes; returns the frames and errors they completed, in order.
        public mutating func feed(_ bytes: [UInt8]) -> [Result<Frame, DecodeError>] {
            var out: [Result<Frame, DecodeError>] = []
            var i = 0
            while i < bytes.count {
                switch mode {
                case .line:
                    let b = bytes[i]
                    i += 1
                    if b == 0x0A {
                        if line.last == 0x0D { line.removeLast() }
                        if let r = finishLine() { out.append(r) }
                        line.removeAll(keepingCapacity: true)
                        badText = false
                    } else if line.count >= DeviceProtocol.maxLineBytes {
                        out.append(.failure(.lineTooLong))
                        line.removeAll(keepingCapacity: true)
                        mode = .skippingLine
                    } else {
                        if (b < 0x20 && b != 0x0D) || b > 0x7E { badText = true }
                        line.append(b)
                    }
                case .skippingLine:
                    if let nl = bytes[i...].firstIndex(of: 0x0A) {
                        i = nl + 1
                        mode = .line
                        badText = false
                    } else {
                        i = bytes.count
                    }
                case .payload(let words, let length, let sha):
                    let take = min(length - payload.count, bytes.count - i)
                    payload += bytes[i..<(i + take)]
                    i += take
                    if payload.count == length {
                        mode = .terminator(words: words, payload: payload, sha256: sha)
                        payload = []
                    }
                case .terminator(let words, let body, let sha):
                    let b = bytes[i]
                    i += 1
                    if b == 0x0D { continue }  // CR LF after a payload is accepted too
                    mode = .line
                    guard b == 0x0A else {
                        out.append(.failure(.missingPayloadTerminator))
                        // The byte belongs to what follows: resynchronise at the next line break.
                        mode = .skippingLine
                        continue
                    }
                    let actual = Hex.sha256(body)
                    if actual != sha {
                        out.append(.failure(.checksumMismatch(expected: sha, actual: actual)))
                    } else {
                        out.append(.success(Frame(words: words, payload: body)))
                    }
                }
            }
            return out
        }

        /// The frame a completed line makes; nil when it announced a payload (the frame comes after the payload).
        private mutating func finishLine() -> Result<Frame, DecodeError>? {
            if badText { return .failure(.notText) }
            guard !line.isEmpty else { return .failure(.emptyLine) }
            let text = String(decoding: line, as: UTF8.self)
            var words = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            guard words.count >= 3, let plus = words[words.count - 2].first, plus == "+" else {
                return .success(Frame(words: words))
            }
            let lengthText = words[words.count - 2].dropFirst()
            let sha = words[words.count - 1].uppercased()
            guard let length = Int(lengthText), length >= 0, length <= DeviceProtocol.maxPayloadBytes,
                sha.count == 64, sha.allSatisfy(\.isHexDigit)
            else {
                return .failure(.badPayloadHeader(String(text.prefix(80))))
            }
            words.removeLast(2)
            mode =
                length == 0
                ? .terminator(words: words, payload: [], sha256: sha)
                : .payload(words: words, length: length, sha256: sha)
            payload.reserveCapacity(length)
            return nil
        }
    }

    /// Percent-encodes a field value: anything but letters, digits and `._:/+-` becomes `%XX`.
    public static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"),
                UInt8(ascii: "/"), UInt8(ascii: "+"), UInt8(ascii: "-"):
                out.append(Character(Unicode.Scalar(b)))
            default:
                out += "%" + Hex.upper([b])
            }
        }
        return out
    }

    /// Decodes `%XX` escapes (invalid ones are kept as they are).
    public static func percentDecode(_ s: String) -> String {
        var bytes: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "%"), i + 2 < u.count,
                let v = Hex.decode(String(decoding: u[(i + 1)...(i + 2)], as: UTF8.self)), v.count == 1
            {
                bytes.append(v[0])
                i += 3
            } else {
                bytes.append(u[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
