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
    public mutating func feed<C: Collection>(_ bytes: C, _ emit: ([String], Int) throws -> Void) rethrows
    where C.Element == UInt8 {
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

    public mutating func feed<C: Collection>(_ bytes: C, _ emit: ([UInt8]) throws -> Void) throws
    where C.Element == UInt8 {
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
