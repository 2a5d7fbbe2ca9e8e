import CSV
import Crypto
import Foundation
import KeylineCore
import KeylineCustody
import KeylineLedger

#if canImport(Glibc)
    import Glibc
#endif

/// The device manifest formats.
public enum ManifestFormat: String, Sendable, CaseIterable {
    /// The backend's Device Import Manifest, exactly.
    case csv
    /// A JSON array of devices with their audit fields.
    case json
    /// One JSON object per line.
    case jsonl
}

/// What an export covered, written beside it as `FILE.summary.json` and signed by the station key (`FILE.sig`).
public struct ExportSummary: Codable, Sendable, Equatable {
    public var file: String
    public var format: String
    public var sha256: String
    public var bytes: Int
    public var rows: Int
    public var first_seq: Int64?
    public var last_seq: Int64?
    public var ledger_head_seq: Int64
    public var ledger_head_hash: String
    public var station_id: String
    public var profile: String?
    public var work_order: String?
    public var state: String?
    public var since: String?
    public var since_seq: Int64?
    public var created_at: String
    /// SHA-256 of the station public key that signed this summary.
    public var signing_key_sha256: String

    /// "seq 4", "seq 4–9" or "no records", for messages.
    public static func rangeText(_ first: Int64?, _ last: Int64?) -> String {
        guard let first else { return "no records" }
        guard let last, last != first else { return "seq \(first)" }
        return "seq \(first)–\(last)"
    }
}

/// Streams ledger records into a device manifest, then writes its signed summary and records an `exported` event.
public struct DeviceManifestExporter {
    public var station: Station
    public var format: ManifestFormat
    public var query: RecordQuery
    /// States exported when no `--state` was given: what a device can still use.
    public static let defaultStates: Set<RecordState> = [.issued, .delivered]

    public init(station: Station, format: ManifestFormat, query: RecordQuery) {
        self.station = station
        self.format = format
        self.query = query
    }

    /// Writes the manifest to `path` (atomically), its summary and signature, and the ledger event.
    public func export(to path: String, now: Date = Date()) async throws -> ExportSummary {
        let config = station.config
        var templates: [String: DescriptionTemplate] = [:]
        var checked: Set<String> = []
        let signing = try StationSigningKey.load(in: config.directory)
        let tmp = path + ".tmp-\(getpid())"
        guard let stream = BufferedFileOutputStream(path: tmp) else {
            throw KeylineError(.ioError, "cannot create \(tmp)")
        }
        var rows = 0
        var head: (seq: Int64, hash: String) = (0, LedgerRecord.genesisHash)
        var first: Int64?
        var last: Int64?
        let writer = try RowWriter(format: format, stream: stream)
        do {
            head = try await station.ledger.forEachRecord(query) { record in
                if query.state == nil && !Self.defaultStates.contains(record.state) { return }
                let name = record.content.profile
                let profile = config.profiles[name]
                if !checked.contains(name) {
                    templates[name] = try profile?.jitp.descriptionTemplate.map(DescriptionTemplate.init)
                    checked.insert(name)
                }
                if record.content.attributes == nil && profile == nil {
                    throw KeylineError(
                        .configuration,
                        "record seq \(record.seq) was issued under profile '\(name)', which station.toml no longer has, before the ledger kept device attributes"
                    )
                }
                let row = DeviceManifestRow(record: record, profile: profile, template: templates[name])
                guard !row.productPRN.isEmpty else {
                    throw KeylineError(
                        .configuration,
                        "record seq \(record.seq) (profile '\(name)') has no product_prn, which the device import manifest requires; set product_prn in [profiles.\(name)]"
                    )
                }
                try writer.write(row)
                rows += 1
                if first == nil { first = record.seq }
                last = record.seq
            }
            try writer.finish()
        } catch let error as KeylineError {
            stream.close()
            unlink(tmp)
            throw error
        } catch {
            stream.close()
            unlink(tmp)
            throw KeylineError(.ioError, "cannot write \(path): \(error)")
        }
        guard stream.finish() else {
            unlink(tmp)
            throw KeylineError(.ioError, "cannot write \(path) (disk full or file not writable)")
        }
        let (digest, size) = try Self.sha256(ofFile: tmp)
        // link(2) refuses an existing name, so an export never replaces another, even one made meanwhile.
        for existing in [
            ManifestSignature.summaryPath(path), ManifestSignature.signaturePath(path),
            ManifestSignature.checkpointPath(path),
        ]
        where FileManager.default.fileExists(atPath: existing) {
            unlink(tmp)
            throw KeylineError(.ioError, "\(existing) already exists; choose another --out or move the old export away")
        }
        guard link(tmp, path) == 0 else {
            let exists = errno == EEXIST
            unlink(tmp)
            throw KeylineError(
                .ioError,
                exists
                    ? "\(path) already exists; choose another --out or move the old export away"
                    : "cannot move the manifest into place at \(path)")
        }
        unlink(tmp)
        SafeFile.syncDirectory(of: path)
        let summary = ExportSummary(
            file: (path as NSString).lastPathComponent, format: format.rawValue, sha256: digest, bytes: size,
            rows: rows,
            first_seq: first, last_seq: last, ledger_head_seq: head.seq, ledger_head_hash: head.hash,
            station_id: config.stationID, profile: query.profile, work_order: query.workOrder,
            state: query.state?.rawValue,
            since: query.createdSince.map(Timestamp.isoMillis), since_seq: query.afterSeq,
            created_at: Timestamp.isoMillis(now),
            signing_key_sha256: Hex.sha256(signing.key.publicKey.derRepresentation))
        try ManifestSignature.write(summary: summary, for: path, key: signing.key)
        try await station.ledger.appendEvent(
            EventContent(
                kind: .exported, recordSeq: nil, cn: nil,
                detail:
                    "manifest devices \(format.rawValue): \(rows) rows, \(ExportSummary.rangeText(first, last)), sha256 \(digest), \(summary.file)",
                stationID: config.stationID, operatorName: config.operatorName(option: nil), at: now))
        // The outside anchor: QA files it with the manifest, and `ledger verify --checkpoint` proves later that
        // nothing this export saw was removed.
        let checkpoint = try await LedgerCheckpoint.make(station: station, now: now)
        try SafeFile.write(checkpoint.text, to: ManifestSignature.checkpointPath(path), exclusive: true)
        try await LedgerCheckpoint.recordEvent(
            station: station, checkpoint: checkpoint.checkpoint, operatorName: config.operatorName(option: nil))
        return summary
    }

    /// SHA-256 of a file read in 1 MiB chunks, and its size.
    static func sha256(ofFile path: String) throws -> (String, Int) {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw KeylineError(.ioError, "cannot read \(path)")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        var size = 0
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
            size += chunk.count
        }
        return (Hex.upper(hasher.finalize()), size)
    }
}

/// Writes manifest rows in one format to a stream: CSV through CSV.swift, JSON by JSONEncoder.
final class RowWriter {
    let format: ManifestFormat
    let stream: OutputStream
    var csv: CSVWriter?
    var count = 0
    let encoder: JSONEncoder

    init(format: ManifestFormat, stream: OutputStream) throws {
        self.format = format
        self.stream = stream
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        stream.open()
        switch format {
        case .csv:
            let w = try CSVWriter(stream: stream)
            // The backend's console wants every field quoted.
            try w.write(row: DeviceManifestRow.csvHeader, quotedAtIndex: { _ in true })
            csv = w
        case .json: try put("[\n")
        case .jsonl: break
        }
    }

    func put(_ text: String) throws {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBufferPointer { stream.write($0.baseAddress!, maxLength: $0.count) }
            if n <= 0 { throw KeylineError(.ioError, "cannot write the manifest (disk full or file not writable)") }
            offset += n
        }
    }

    func write(_ row: DeviceManifestRow) throws {
        switch format {
        case .csv:
            try csv!.write(row: row.csvFields, quotedAtIndex: { _ in true })
        case .json:
            try put((count == 0 ? "" : ",\n") + String(decoding: try encoder.encode(DeviceJSON(row)), as: UTF8.self))
        case .jsonl:
            try put(String(decoding: try encoder.encode(DeviceJSON(row)), as: UTF8.self) + "\n")
        }
        count += 1
    }

    func finish() throws {
        switch format {
        case .csv: try put("\n")
        case .json: try put(count == 0 ? "]\n" : "\n]\n")
        case .jsonl: break
        }
    }
}

/// A device in the JSON manifests: the backend's fields plus the audit fields.
struct DeviceJSON: Encodable {
    var identifier: String
    var description: String
    var tags: [String]
    var product_prn: String
    @Nullable var cohort_prn: String?
    var certificates: [String]
    @Nullable var target: String?
    var seq: Int64
    var serial: String
    var fingerprint: String
    @Nullable var aki: String?
    var not_before: String
    var not_after: String
    var station_id: String
    var `operator`: String
    @Nullable var hardware_id: String?
    @Nullable var work_order: String?
    var profile: String
    var ca: String
    var state: String
    var issued_at: String
    var updated_at: String

    init(_ row: DeviceManifestRow) {
        let c = row.record.content
        identifier = row.identifier
        description = row.description
        tags = row.tags
        product_prn = row.productPRN
        cohort_prn = row.cohortPRN.isEmpty ? nil : row.cohortPRN
        certificates = [row.certificates]
        target = row.target.isEmpty ? nil : row.target
        seq = row.record.seq
        serial = c.serialHex
        fingerprint = c.certificateFingerprint
        aki = try? CertificateFactory.authorityKeyIdentifierHex(der: c.certificateDER)
        not_before = Timestamp.iso(c.notBefore)
        not_after = Timestamp.iso(c.notAfter)
        station_id = c.stationID
        self.operator = c.operatorName
        hardware_id = c.hardwareID
        work_order = c.workOrder
        profile = c.profile
        ca = c.caName
        state = row.record.state.rawValue
        issued_at = Timestamp.isoMillis(c.createdAt)
        updated_at = Timestamp.isoMillis(row.record.updatedAt)
    }
}

/// The detached signature of an export: `FILE.summary.json` signed with the station key into `FILE.sig` (DER
/// ECDSA-SHA256, so `openssl dgst -sha256 -verify station-signing.pem -signature FILE.sig FILE.summary.json`
/// checks it too).
public enum ManifestSignature {
    public static func summaryPath(_ file: String) -> String { file + ".summary.json" }
    public static func signaturePath(_ file: String) -> String { file + ".sig" }
    public static func checkpointPath(_ file: String) -> String { file + ".checkpoint" }

    static func write(summary: ExportSummary, for file: String, key: P256.Signing.PrivateKey) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let bytes = Array(try encoder.encode(summary)) + [UInt8(ascii: "\n")]
        try SafeFile.write(bytes, to: summaryPath(file), exclusive: true)
        try SafeFile.write(
            Array(try key.signature(for: bytes).derRepresentation), to: signaturePath(file), exclusive: true)
    }

    /// Checks `file` against its summary and the summary's signature; returns the summary.
    ///
    /// Throws ``KeylineError/Code/integrity`` when the signature or the file's SHA-256 does not match.
    public static func verify(file: String, publicKey: P256.Signing.PublicKey) throws -> ExportSummary {
        guard let summaryData = FileManager.default.contents(atPath: summaryPath(file)) else {
            throw KeylineError(.dataError, "\(summaryPath(file)) is missing; every export has one beside it")
        }
        guard let sigData = FileManager.default.contents(atPath: signaturePath(file)) else {
            throw KeylineError(.dataError, "\(signaturePath(file)) is missing; every export has one beside it")
        }
        guard let signature = try? P256.Signing.ECDSASignature(derRepresentation: sigData),
            publicKey.isValidSignature(signature, for: summaryData)
        else {
            throw KeylineError(
                .integrity,
                "\(summaryPath(file)): the station's signature does not verify (edited, or signed by another station)")
        }
        let summary: ExportSummary
        do {
            summary = try JSONDecoder().decode(ExportSummary.self, from: summaryData)
        } catch {
            throw KeylineError(.dataError, "\(summaryPath(file)) is not an export summary")
        }
        let (digest, size) = try DeviceManifestExporter.sha256(ofFile: file)
        guard digest == summary.sha256, size == summary.bytes else {
            throw KeylineError(
                .integrity,
                "\(file): SHA-256 \(digest) does not match its signed summary (\(summary.sha256)); the file was changed after export"
            )
        }
        return summary
    }
}

/// An OutputStream that buffers in memory and writes to a file descriptor in 1 MiB blocks.
///
/// CSV.swift writes one byte per `write` call; on a plain file stream that is one system call per byte (a
/// million-device manifest took minutes). This keeps the library's quoting and makes the I/O block-sized.
final class BufferedFileOutputStream: OutputStream {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var failed = false
    private var status: Stream.Status = .notOpen
    static let blockSize = 1 << 20

    /// Creates (truncating) `path` with `mode`.
    init?(path: String, mode: mode_t = 0o644) {
        fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { return nil }
        super.init(toMemory: ())
        buffer.reserveCapacity(Self.blockSize)
    }

    /// Writes to an open descriptor (standard output); `finish` then flushes without closing or syncing it.
    init(fd: Int32) {
        self.fd = fd
        borrowed = true
        super.init(toMemory: ())
        buffer.reserveCapacity(Self.blockSize)
    }

    private var borrowed = false

    required init(toMemory: ()) {
        fd = -1
        super.init(toMemory: ())
    }

    override var streamStatus: Stream.Status { status }
    override var hasSpaceAvailable: Bool { !failed }
    override func open() { status = .open }

    override func write(_ bytes: UnsafePointer<UInt8>, maxLength len: Int) -> Int {
        guard !failed else { return -1 }
        buffer.append(contentsOf: UnsafeBufferPointer(start: bytes, count: len))
        if buffer.count >= Self.blockSize && !flush() { return -1 }
        return len
    }

    /// Writes what is buffered; false (and the stream fails) when the file system refuses.
    @discardableResult
    func flush() -> Bool {
        var offset = 0
        while offset < buffer.count {
            let n = buffer[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                failed = true
                return false
            }
            offset += n
        }
        buffer.removeAll(keepingCapacity: true)
        return true
    }

    /// Flushes, fsyncs and closes; false when any write failed.
    func finish() -> Bool {
        if borrowed {
            status = .closed
            return flush() && !failed
        }
        let ok = flush() && !failed && fsync(fd) == 0
        Glibc.close(fd)
        status = .closed
        return ok
    }

    override func close() {
        if status != .closed {
            _ = flush()
            if !borrowed { Glibc.close(fd) }
            status = .closed
        }
    }
}
