/// RFC 4180 CSV over bytes, fed in chunks of any size: quoted fields (with doubled quotes and line breaks inside),
/// CRLF or LF rows, blank lines skipped. Holds one row at a time, so a file of any size parses in flat memory.
public struct CSVRowParser {
    private var field: [UInt8] = []
    private var row: [String] = []
    private var inQuotes = false
    private var quotePending = false
    private var fieldStarted = false
    /// Whether the current row has any content (a line with only a comma is a row of two empty fields).
    private var rowStarted = false
    /// The 1-based line on which the current row started (for error messages).
    public private(set) var rowLine = 1
    private var line = 1

    public init() {}

    private mutating func endField() {
        row.append(String(decoding: field, as: UTF8.self))
        field.removeAll(keepingCapacity: true)
        fieldStarted = false
    }

    private mutating func endRow(_ emit: ([String], Int) throws -> Void) rethrows {
        endField()
        let done = row
        row.removeAll(keepingCapacity: true)
        rowStarted = false
        try emit(done, rowLine)
    }

    /// Feeds bytes; `emit` gets each complete row with the line it started on.
    public mutating func feed(_ chunk: [UInt8], _ emit: ([String], Int) throws -> Void) rethrows {
        try chunk.withUnsafeBufferPointer { try feed(buffer: $0, emit) }
    }

    // Concrete, not generic: a generic feed called from another module is not specialised, and went through
    // witness tables for every byte.
    private mutating func feed(
        buffer bytes: UnsafeBufferPointer<UInt8>, _ emit: ([String], Int) throws -> Void
    )
        rethrows
    {
        for b in bytes {
            if inQuotes {
                if quotePending {
                    quotePending = false
                    if b == UInt8(ascii: "\"") {
                        field.append(b)
                        continue
                    }
                    inQuotes = false
                    // fall through: `b` follows the closing quote
                } else {
                    if b == UInt8(ascii: "\"") {
                        quotePending = true
                    } else {
                        if b == UInt8(ascii: "\n") { line += 1 }
                        field.append(b)
                    }
                    continue
                }
            }
            switch b {
            case UInt8(ascii: "\""):
                if !fieldStarted && field.isEmpty {
                    inQuotes = true
                    fieldStarted = true
                    rowStarted = true
                } else {
                    field.append(b)
                }
            case UInt8(ascii: ","):
                endField()
                rowStarted = true
            case UInt8(ascii: "\n"):
                if !rowStarted && field.isEmpty {
                    // blank line
                } else {
                    try endRow(emit)
                }
                line += 1
                rowLine = line
            case UInt8(ascii: "\r"):
                break
            default:
                field.append(b)
                fieldStarted = true
                rowStarted = true
            }
        }
    }

    /// Ends the input: emits a last row without a line break. Returns false when a quoted field never closed.
    public mutating func finish(_ emit: ([String], Int) throws -> Void) rethrows -> Bool {
        if quotePending {
            quotePending = false
            inQuotes = false
        }
        if inQuotes { return false }
        if rowStarted || !field.isEmpty { try endRow(emit) }
        return true
    }
}

/// Splits a stream of JSON into its top-level objects, whether they come as one array (`[{…}, {…}]`) or as JSON
/// Lines: each complete `{…}` is handed out as bytes for a JSON decoder, so a file of any size needs memory for one
/// object only.
public struct JSONObjectSplitter {
    private var depth = 0
    private var inString = false
    private var escape = false
    private var current: [UInt8] = []
    private var arrayOpen = false
    /// Bytes read so far (for error messages).
    public private(set) var offset = 0

    public init() {}

    public enum Failure: Error, Equatable {
        /// Something other than objects, commas, brackets and white space at the top level.
        case unexpected(byte: UInt8, offset: Int)
        /// The input ended inside an object.
        case truncated
    }

    public mutating func feed(_ chunk: [UInt8], _ emit: ([UInt8]) throws -> Void) throws {
        try chunk.withUnsafeBufferPointer { try feed(buffer: $0, emit) }
    }

    private mutating func feed(buffer bytes: UnsafeBufferPointer<UInt8>, _ emit: ([UInt8]) throws -> Void) throws {
        for b in bytes {
            offset += 1
            if depth == 0 {
                switch b {
                case UInt8(ascii: "{"):
                    depth = 1
                    current.removeAll(keepingCapacity: true)
                    current.append(b)
                case UInt8(ascii: "["):
                    guard !arrayOpen else { throw Failure.unexpected(byte: b, offset: offset) }
                    arrayOpen = true
                case UInt8(ascii: "]"):
                    guard arrayOpen else { throw Failure.unexpected(byte: b, offset: offset) }
                    arrayOpen = false
                case UInt8(ascii: ","), UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"):
                    break
                default:
                    throw Failure.unexpected(byte: b, offset: offset)
                }
                continue
            }
            current.append(b)
            if inString {
                if escape {
                    escape = false
                } else if b == UInt8(ascii: "\\") {
                    escape = true
                } else if b == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch b {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 { try emit(current) }
            default: break
            }
        }
    }

    /// Ends the input; throws ``Failure/truncated`` when an object was left open.
    public func finish() throws {
        if depth != 0 { throw Failure.truncated }
    }
}

/// PEM certificates in text, decoded at the byte level: `-----BEGIN CERTIFICATE-----` blocks, base64 between the
/// lines with white space (and JSON-escaped line breaks, a backslash followed by `n` or `r`) skipped, anything else
/// refused. Reconcile fingerprints a million of these; Foundation's string search and decoding were most of its time.
public enum PEMBlocks {
    public enum Failure: Error, Equatable {
        /// A BEGIN line without its END line.
        case unterminated
        /// A byte that is not base64 or white space inside a block, or bad padding.
        case badBase64
    }

    static let begin = Array("-----BEGIN CERTIFICATE-----".utf8)
    static let end = Array("-----END CERTIFICATE-----".utf8)

    /// Whether `bytes` holds at least one BEGIN CERTIFICATE line.
    public static func containsCertificate(_ bytes: [UInt8]) -> Bool { find(begin, in: bytes, from: 0) != nil }

    /// The DER of every certificate block in `bytes`, in order.
    public static func certificates(in bytes: [UInt8]) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        var at = 0
        while let b = find(begin, in: bytes, from: at) {
            let bodyStart = b + begin.count
            guard let e = find(end, in: bytes, from: bodyStart) else { throw Failure.unterminated }
            out.append(
                try bytes.withUnsafeBufferPointer { try decodeBase64(UnsafeBufferPointer(rebasing: $0[bodyStart..<e])) }
            )
            at = e + end.count
        }
        return out
    }

    static func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
        guard needle.count <= hay.count, from <= hay.count - needle.count else { return nil }
        let first = needle[0]
        var i = from
        let last = hay.count - needle.count
        while i <= last {
            if hay[i] == first {
                var j = 1
                while j < needle.count && hay[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }

    static let table: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
            t[Int(c)] = UInt8(i)
        }
        return t
    }()

    /// Strict base64 (standard alphabet, `=` padding only at the end), skipping white space and escaped breaks.
    public static func decodeBase64(_ text: UnsafeBufferPointer<UInt8>) throws -> [UInt8] {
        let table = Self.table  // once, not a lazy-global check per byte
        var out: [UInt8] = []
        out.reserveCapacity(text.count * 3 / 4)
        var acc: UInt32 = 0
        var n = 0
        var padding = 0
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            i += 1
            switch c {
            case 0x20, 0x09, 0x0A, 0x0D: continue
            case UInt8(ascii: "\\"):
                // "\n" or "\r" as two characters: a line break escaped by JSON.
                guard i < text.endIndex, text[i] == UInt8(ascii: "n") || text[i] == UInt8(ascii: "r") else {
                    throw Failure.badBase64
                }
                i += 1
                continue
            case UInt8(ascii: "="):
                padding += 1
                continue
            default:
                let v = table[Int(c)]
                guard v != 0xFF, padding == 0 else { throw Failure.badBase64 }
                acc = acc << 6 | UInt32(v)
                n += 1
                if n == 4 {
                    out.append(UInt8(acc >> 16 & 0xFF))
                    out.append(UInt8(acc >> 8 & 0xFF))
                    out.append(UInt8(acc & 0xFF))
                    acc = 0
                    n = 0
                }
            }
        }
        switch (n, padding) {
        case (0, 0): break
        case (2, 2), (2, 0):
            out.append(UInt8(acc >> 4 & 0xFF))
        case (3, 1), (3, 0):
            out.append(UInt8(acc >> 10 & 0xFF))
            out.append(UInt8(acc >> 2 & 0xFF))
        default: throw Failure.badBase64
        }
        return out
    }
}
