import Crypto
import Foundation
import Testing

@testable import KeylineCore

/// Every way to cut `bytes` into chunks that the tests try: one byte at a time, a cut at every position, random cuts.
func splits(_ bytes: [UInt8], seed: UInt64 = 42) -> [[[UInt8]]] {
    var out: [[[UInt8]]] = [[bytes], bytes.map { [$0] }]
    for cut in 0...bytes.count { out.append([Array(bytes[..<cut]), Array(bytes[cut...])]) }
    var rng = SeededRNG(seed: seed)
    for _ in 0..<50 {
        var chunks: [[UInt8]] = []
        var i = 0
        while i < bytes.count {
            let n = Int.random(in: 1...max(1, bytes.count / 3), using: &rng)
            chunks.append(Array(bytes[i..<min(bytes.count, i + n)]))
            i += n
        }
        out.append(chunks)
    }
    return out
}

struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func parseCSV(_ chunks: [[UInt8]]) -> (rows: [[String]], lines: [Int], closed: Bool) {
    var p = CSVRowParser()
    var rows: [[String]] = []
    var lines: [Int] = []
    for c in chunks {
        p.feed(c) { row, line in
            rows.append(row)
            lines.append(line)
        }
    }
    let closed = p.finish { row, line in
        rows.append(row)
        lines.append(line)
    }
    return (rows, lines, closed)
}

@Suite("Streaming CSV and JSON readers")
struct StreamingParserTests {
    static let csv = Array(
        "\"identifier\",\"certificates\",\"tags\"\r\n\"dev-1\",\"-----BEGIN\nAB==\n-----END\",\"a,b\"\n\n\"say \"\"hi\"\"\",,plain\nlast,\"\",x"
            .utf8)

    @Test("CSV rows come out the same however the bytes are split")
    func csvSplits() {
        let expected: [[String]] = [
            ["identifier", "certificates", "tags"],
            ["dev-1", "-----BEGIN\nAB==\n-----END", "a,b"],
            ["say \"hi\"", "", "plain"],
            ["last", "", "x"],
        ]
        for chunks in splits(Self.csv) {
            let got = parseCSV(chunks)
            #expect(got.rows == expected)
            #expect(got.lines == [1, 2, 6, 7])
            #expect(got.closed)
        }
    }

    @Test("an unterminated quote is reported, not swallowed")
    func csvUnterminated() {
        for chunks in splits(Array("a,b\n\"open,c\n".utf8)) {
            let got = parseCSV(chunks)
            #expect(got.rows == [["a", "b"]])
            #expect(!got.closed)
        }
    }

    @Test("a line of only a comma is a row of two empty fields; blank lines are skipped")
    func csvEmptyFields() {
        #expect(parseCSV([Array(",\n\n\r\nx\n".utf8)]).rows == [["", ""], ["x"]])
    }

    static let json = Array(
        "[\n {\"identifier\": \"a\", \"tags\": [\"x\", \"}\"]},\n {\"identifier\": \"b\\\"}\", \"o\": {\"n\": [1, {\"d\": 2}]}}\n]\n"
            .utf8)

    func splitJSON(_ chunks: [[UInt8]]) throws -> [String] {
        var s = JSONObjectSplitter()
        var out: [String] = []
        for c in chunks { try s.feed(c) { out.append(String(decoding: $0, as: UTF8.self)) } }
        try s.finish()
        return out
    }

    @Test("JSON objects come out whole however the bytes are split, braces in strings included")
    func jsonSplits() throws {
        let expected = [
            "{\"identifier\": \"a\", \"tags\": [\"x\", \"}\"]}",
            "{\"identifier\": \"b\\\"}\", \"o\": {\"n\": [1, {\"d\": 2}]}}",
        ]
        for chunks in splits(Self.json) { #expect(try splitJSON(chunks) == expected) }
        // JSON lines split the same way
        let lines = Array((expected.joined(separator: "\n") + "\n").utf8)
        for chunks in splits(lines) { #expect(try splitJSON(chunks) == expected) }
        for object in expected {
            #expect((try? JSONSerialization.jsonObject(with: Data(object.utf8))) != nil)
        }
    }

    @Test("JSON that is not a list of objects is refused with the offending byte")
    func jsonRefusals() {
        #expect(throws: JSONObjectSplitter.Failure.unexpected(byte: UInt8(ascii: "7"), offset: 12)) {
            try splitJSON([Array("[{\"a\": 1}, 7]".utf8)])
        }
        #expect(throws: JSONObjectSplitter.Failure.truncated) { try splitJSON([Array("[{\"a\": [1, 2]".utf8)]) }
        #expect(throws: JSONObjectSplitter.Failure.unexpected(byte: UInt8(ascii: "["), offset: 2)) {
            try splitJSON([Array("[[{}]]".utf8)])
        }
    }
}

@Suite("Checkpoints")
struct CheckpointTests {
    let key = P256.Signing.PrivateKey()
    var checkpoint: Checkpoint {
        Checkpoint(
            stationID: "line-1", recordsSeq: 12, recordsHash: String(repeating: "A", count: 64), eventsSeq: 30,
            eventsHash: String(repeating: "B", count: 64), createdAt: Date(timeIntervalSince1970: 1_800_000_000.5),
            signingKeySHA256: Hex.sha256(key.publicKey.derRepresentation))
    }

    @Test("a signed checkpoint parses back to itself with its key")
    func roundTrip() throws {
        let text = try Checkpoint.signed(checkpoint, key: key)
        #expect(text.hasPrefix("keyline-checkpoint v1\nstation_id: line-1\nrecords_seq: 12\n"))
        #expect(try Checkpoint.parse(text, publicKey: key.publicKey, source: "cp") == checkpoint)
    }

    @Test("an edited field, another key, or garbage is refused")
    func refusals() throws {
        let text = try Checkpoint.signed(checkpoint, key: key)
        for edited in [
            text.replacingOccurrences(of: "records_seq: 12", with: "records_seq: 11"),
            text.replacingOccurrences(of: "events_seq: 30", with: "events_seq: 31"),
            text.replacingOccurrences(of: "station_id: line-1", with: "station_id: line-2"),
        ] {
            #expect(throws: KeylineError(.integrity, "")) {
                try Checkpoint.parse(edited, publicKey: key.publicKey, source: "cp")
            }
        }
        #expect(throws: KeylineError(.integrity, "")) {
            try Checkpoint.parse(text, publicKey: P256.Signing.PrivateKey().publicKey, source: "cp")
        }
        #expect(throws: KeylineError(.dataError, "")) {
            try Checkpoint.parse("hello\n", publicKey: key.publicKey, source: "cp")
        }
        #expect(throws: KeylineError(.dataError, "")) {
            try Checkpoint.parse(
                text.replacingOccurrences(of: "records_seq: 12", with: "records_seq: twelve"), publicKey: key.publicKey,
                source: "cp")
        }
    }

    @Test("record states: revoked is final, a failed delivery may still succeed")
    func states() {
        #expect(RecordState.issued.canBecome(.delivered) && RecordState.issued.canBecome(.revoked))
        #expect(RecordState.failed.canBecome(.delivered) && RecordState.delivered.canBecome(.revoked))
        #expect(!RecordState.delivered.canBecome(.issued) && !RecordState.delivered.canBecome(.failed))
        #expect(RecordState.allCases.allSatisfy { !RecordState.revoked.canBecome($0) })
        #expect(RecordState.allCases.allSatisfy { !$0.canBecome($0) })
    }
}

@Suite("PEM blocks at the byte level")
struct PEMBlocksTests {
    @Test("decodes what Foundation encodes, every length and line layout")
    func roundTrip() throws {
        var rng = SeededRNG(seed: 7)
        for length in 0..<200 {
            let der = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let b64 = Data(der).base64EncodedString(options: length % 2 == 0 ? [.lineLength64Characters] : [])
            let pem = "junk before\r\n-----BEGIN CERTIFICATE-----\r\n\(b64)\r\n-----END CERTIFICATE-----\ntrailing"
            if length == 0 { continue }
            #expect(try PEMBlocks.certificates(in: Array(pem.utf8)) == [der])
            // JSON-escaped line breaks, as a PEM pasted from a JSON string
            let escaped = pem.replacingOccurrences(of: "\r\n", with: "\\n")
            #expect(try PEMBlocks.certificates(in: Array(escaped.utf8)) == [der])
        }
    }

    @Test("several blocks, joined by a blank line as the device import manifest does")
    func several() throws {
        let a = PEMText.encode([1, 2, 3, 4, 5])
        let b = PEMText.encode([9, 8, 7])
        #expect(try PEMBlocks.certificates(in: Array((a + "\n" + b).utf8)) == [[1, 2, 3, 4, 5], [9, 8, 7]])
        #expect(!PEMBlocks.containsCertificate(Array("no pem here".utf8)))
    }

    @Test("junk inside a block, bad padding or a missing END line are refused")
    func refusals() {
        for body in ["AQID%BA==", "AQIDBA=x", "A===", "AQIDBA==AQ", "AQ\\tID"] {
            let pem = "-----BEGIN CERTIFICATE-----\n\(body)\n-----END CERTIFICATE-----"
            #expect(throws: PEMBlocks.Failure.badBase64) { try PEMBlocks.certificates(in: Array(pem.utf8)) }
        }
        #expect(throws: PEMBlocks.Failure.unterminated) {
            try PEMBlocks.certificates(in: Array("-----BEGIN CERTIFICATE-----\nAQID\n".utf8))
        }
    }
}
