import Foundation
import Testing

@testable import KeylineCore

/// A session as a device and the station would exchange it, both directions in one stream, with CRLF line ends in
/// places (a technician's terminal) and payloads of several sizes.
let csrPEM = Array("-----BEGIN CERTIFICATE REQUEST-----\nMIIBFAKE\n-----END CERTIFICATE REQUEST-----\n".utf8)
let chainPEM = Array(
    ("-----BEGIN CERTIFICATE-----\n" + String(repeating: "QUJD", count: 300) + "\n-----END CERTIFICATE-----\n").utf8)

let transcript: [DeviceProtocol.Frame] = [
    .init(words: ["HELLO", "keyline/1"]),
    .init(words: ["OK", "HELLO", "keyline/1"]),
    .init(words: ["IDENTIFY"]),
    .init(words: ["OK", "IDENTIFY", "hw=HW-0042", "model=GW%201", "fw=1.2.3", "keygen=yes"]),
    .init(words: ["CSR", "cn=SN-000042"]),
    .init(words: ["OK", "CSR"], payload: csrPEM),
    .init(words: ["STORE-CERT"], payload: chainPEM),
    .init(words: ["OK", "STORED"]),
    .init(words: ["STORE-KEY"], payload: []),
    .init(words: ["ERR", "NOKEYGEN", "this", "device", "makes", "its", "own", "keys"]),
    .init(words: ["READBACK"]),
    .init(words: [
        "OK", "READBACK", "cert=" + String(repeating: "A", count: 64), "pubkey=" + String(repeating: "B", count: 64),
    ]),
]

func wire(_ frames: [DeviceProtocol.Frame], crlfEvery: Int = 3) -> [UInt8] {
    var out: [UInt8] = []
    for (i, f) in frames.enumerated() {
        var bytes = f.encoded
        if i % crlfEvery == 1, f.payload == nil {  // CR LF on some plain lines
            bytes.insert(0x0D, at: bytes.count - 1)
        }
        out += bytes
    }
    return out
}

func decodeAll(_ chunks: [[UInt8]]) -> [Result<DeviceProtocol.Frame, DeviceProtocol.DecodeError>] {
    var d = DeviceProtocol.Decoder()
    return chunks.flatMap { d.feed($0) }
}

@Suite("Device protocol v1 decoder")
struct DeviceProtocolTests {
    @Test("a whole session decodes to the same frames whatever the split: byte by byte, at every cut, at random")
    func everySplit() {
        let bytes = wire(transcript)
        let expected = transcript.map { Result<DeviceProtocol.Frame, DeviceProtocol.DecodeError>.success($0) }
        for chunks in splits(bytes) { #expect(decodeAll(chunks) == expected) }
        // Cut at every pair of positions too (three pieces), over the part with a payload.
        let window = Array(bytes.prefix(260))
        let head = decodeAll([window])
        for a in 0...window.count {
            for b in stride(from: a, through: window.count, by: 7) {
                #expect(decodeAll([Array(window[..<a]), Array(window[a..<b]), Array(window[b...])]) == head)
            }
        }
    }

    @Test("fields are key=value words, percent-decoded")
    func fields() {
        let f = transcript[3]
        #expect(f.fields == ["hw": "HW-0042", "model": "GW 1", "fw": "1.2.3", "keygen": "yes"])
        #expect(DeviceProtocol.percentEncode("GW 1/ü") == "GW%201/%C3%BC")
        #expect(DeviceProtocol.percentDecode(DeviceProtocol.percentEncode("a b%c=d\n")) == "a b%c=d\n")
    }

    @Test("a wrong checksum is reported, and the next frame still decodes")
    func checksum() {
        var bytes = DeviceProtocol.Frame(words: ["OK", "CSR"], payload: csrPEM).encoded
        let at = bytes.firstIndex(of: UInt8(ascii: "M"))!
        bytes[at] = UInt8(ascii: "N")  // one payload byte changed in transit
        bytes += DeviceProtocol.Frame(words: ["OK", "PONG"]).encoded
        for chunks in splits(bytes) {
            let got = decodeAll(chunks)
            #expect(got.count == 2)
            guard case .failure(.checksumMismatch) = got[0] else {
                Issue.record("expected a checksum mismatch, got \(got[0])")
                continue
            }
            #expect(got[1] == .success(DeviceProtocol.Frame(words: ["OK", "PONG"])))
        }
    }

    @Test("garbage, control bytes, over-long lines and bad payload headers are errors; decoding resumes after them")
    func garbage() {
        let long = [UInt8](repeating: UInt8(ascii: "x"), count: DeviceProtocol.maxLineBytes + 50) + [0x0A]
        let stream: [UInt8] =
            Array("\u{01}\u{02}binary\n".utf8) + long + Array("OK +12 nothex\n".utf8)
            + Array("OK +99999999 \(String(repeating: "0", count: 64))\n".utf8)
            + [0x0A] + Array("OK PONG\n".utf8)
        let got = decodeAll([stream])
        #expect(got.count == 6)
        #expect(got[0] == .failure(.notText))
        #expect(got[1] == .failure(.lineTooLong))
        if case .failure(.badPayloadHeader) = got[2] {} else { Issue.record("expected a bad header, got \(got[2])") }
        if case .failure(.badPayloadHeader) = got[3] {} else { Issue.record("expected a bad header, got \(got[3])") }
        #expect(got[4] == .failure(.emptyLine))
        #expect(got[5] == .success(DeviceProtocol.Frame(words: ["OK", "PONG"])))
        // The same, a byte at a time.
        #expect(decodeAll(stream.map { [$0] }) == got)
    }

    @Test("a payload not followed by a line break is an error, and the decoder resynchronises")
    func terminator() {
        let f = DeviceProtocol.Frame(words: ["STORE-CERT"], payload: Array("abc".utf8))
        var bytes = f.encoded
        bytes[bytes.count - 1] = UInt8(ascii: "X")
        bytes += Array("rest of line\nPING\n".utf8)
        #expect(
            decodeAll([bytes]) == [
                .failure(.missingPayloadTerminator), .success(DeviceProtocol.Frame(words: ["PING"])),
            ])
    }

    @Test("a stream cut mid-frame is visible, a clean one is not")
    func midFrame() {
        var d = DeviceProtocol.Decoder()
        let bytes = DeviceProtocol.Frame(words: ["OK", "CSR"], payload: csrPEM).encoded
        _ = d.feed(Array(bytes.prefix(30)))
        #expect(d.isMidFrame)
        _ = d.feed(Array(bytes.dropFirst(30)))
        #expect(!d.isMidFrame)
    }
}
