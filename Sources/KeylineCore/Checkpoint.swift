import Crypto
import Foundation

/// A signed statement of a ledger's heads at one moment: "this station's ledger held records 1…N ending in hash H
/// and events 1…M ending in hash E". Kept outside the station (with QA, beside every manifest), it proves later
/// that nothing it covered was removed or rewritten, which the hash chain alone cannot prove for the newest rows.
///
/// The file is text a person can read; the last line signs every byte above it with the station key:
///
///     keyline-checkpoint v1
///     station_id: line-1
///     records_seq: 1200
///     records_hash: 9F…
///     events_seq: 1311
///     events_hash: 41…
///     created_at: 2026-11-29T06:40:00.123Z
///     signing_key_sha256: 0A…
///     signature: MEUCIQ… (base64 DER ECDSA-SHA256 of the lines above, newlines included)
public struct Checkpoint: Sendable, Equatable {
    public var stationID: String
    public var recordsSeq: Int64
    public var recordsHash: String
    public var eventsSeq: Int64
    public var eventsHash: String
    public var createdAt: Date
    /// SHA-256 of the DER public key that signed it (upper-case hex).
    public var signingKeySHA256: String

    public static let magic = "keyline-checkpoint v1"

    public init(
        stationID: String, recordsSeq: Int64, recordsHash: String, eventsSeq: Int64, eventsHash: String,
        createdAt: Date, signingKeySHA256: String
    ) {
        self.stationID = stationID
        self.recordsSeq = recordsSeq
        self.recordsHash = recordsHash
        self.eventsSeq = eventsSeq
        self.eventsHash = eventsHash
        self.createdAt = Timestamp.wholeMillis(createdAt)
        self.signingKeySHA256 = signingKeySHA256
    }

    /// The signed part: every line but the signature, each ending in a newline.
    public var body: String {
        """
        \(Self.magic)
        station_id: \(stationID)
        records_seq: \(recordsSeq)
        records_hash: \(recordsHash)
        events_seq: \(eventsSeq)
        events_hash: \(eventsHash)
        created_at: \(Timestamp.isoMillis(createdAt))
        signing_key_sha256: \(signingKeySHA256)

        """
    }

    /// The whole file, signed with `key`.
    public static func signed(_ c: Checkpoint, key: P256.Signing.PrivateKey) throws -> String {
        let signature = try key.signature(for: Array(c.body.utf8))
        return c.body + "signature: \(signature.derRepresentation.base64EncodedString())\n"
    }

    /// Parses a checkpoint file and checks its signature against `publicKey`.
    ///
    /// Throws ``KeylineError/Code/dataError`` when the text is not a checkpoint and ``KeylineError/Code/integrity``
    /// when its signature does not verify with `publicKey` (edited, or signed by another station's key).
    public static func parse(_ original: String, publicKey: P256.Signing.PublicKey, source: String) throws -> Checkpoint
    {
        // A file that went through a CRLF conversion is read as written (the signature covers LF line ends).
        let text = original.replacingOccurrences(of: "\r\n", with: "\n")
        // The signature is the last line: search from the end, so no field value can stand in for it.
        guard text.hasPrefix(Self.magic + "\n"), let sigLine = text.range(of: "\nsignature: ", options: .backwards)
        else {
            throw KeylineError(.dataError, "\(source) is not a keyline checkpoint (expected '\(Self.magic)')")
        }
        let sigRange = text.index(after: sigLine.lowerBound)..<sigLine.upperBound
        let body = String(text[..<sigRange.lowerBound])
        var fields: [String: String] = [:]
        for line in body.split(separator: "\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else {
                throw KeylineError(.dataError, "\(source): malformed line '\(line.prefix(40))'")
            }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let sigText = text[sigRange.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
        func field(_ name: String) throws -> String {
            guard let v = fields[name], !v.isEmpty else {
                throw KeylineError(.dataError, "\(source): missing '\(name)'")
            }
            return v
        }
        guard let recordsSeq = Int64(try field("records_seq")), let eventsSeq = Int64(try field("events_seq")),
            recordsSeq >= 0, eventsSeq >= 0
        else {
            throw KeylineError(.dataError, "\(source): records_seq and events_seq must be whole numbers")
        }
        guard let createdAt = Timestamp.parse(try field("created_at")) else {
            throw KeylineError(.dataError, "\(source): created_at is not an ISO 8601 time")
        }
        let checkpoint = Checkpoint(
            stationID: try field("station_id"), recordsSeq: recordsSeq, recordsHash: try field("records_hash"),
            eventsSeq: eventsSeq, eventsHash: try field("events_hash"), createdAt: createdAt,
            signingKeySHA256: try field("signing_key_sha256"))
        guard let der = Data(base64Encoded: sigText),
            let signature = try? P256.Signing.ECDSASignature(derRepresentation: der),
            publicKey.isValidSignature(signature, for: Array(body.utf8))
        else {
            throw KeylineError(
                .integrity,
                "\(source): the station's signature does not verify (the checkpoint was edited, or signed by another station's key)"
            )
        }
        return checkpoint
    }
}
