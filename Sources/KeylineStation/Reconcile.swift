import Foundation
import KeylineCore
import KeylineLedger
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// Where `ledger reconcile` puts a device or a record that is not simply matched, most alarming first.
public enum ReconcileCategory: String, CaseIterable, Sendable, Codable, Comparable {
    /// The backend knows a device this station never issued: an unknown CN, or a certificate under one of our CAs
    /// that is not in the ledger (a leaked CA key mints devices).
    case notIssuedHere = "not_issued_here"
    /// A known CN with another certificate than the one issued here.
    case certificateMismatch = "certificate_mismatch"
    /// Revoked here (rework, scrap, compromise), still active in the backend.
    case revokedButActive = "revoked_but_active"
    /// Product, cohort or tags differ from what the profile gave the device at issuance.
    case attributeMismatch = "attribute_mismatch"
    /// The export lists an identifier more than once.
    case duplicateIdentifier = "duplicate_identifier"
    /// Issued here (and not revoked or failed), never seen by the backend.
    case missingInBackend = "missing_in_backend"

    public var title: String {
        switch self {
        case .notIssuedHere: "SEEN BY THE BACKEND, NEVER ISSUED HERE"
        case .certificateMismatch: "known CN, different certificate"
        case .revokedButActive: "revoked here, still active in the backend"
        case .attributeMismatch: "product, cohort or tags differ from the profile"
        case .duplicateIdentifier: "duplicate identifier in the export"
        case .missingInBackend: "issued here, never seen by the backend"
        }
    }

    var rank: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
}

/// One device or record that is not simply matched.
public struct ReconcileFinding: Sendable, Codable, Equatable {
    public var category: ReconcileCategory
    public var identifier: String
    /// The export's row (CSV line or JSON object number), when the finding comes from the export.
    public var row: Int?
    /// The ledger record, when there is one.
    public var ledger_seq: Int64?
    /// Whole days since issuance, for records the backend never saw.
    public var age_days: Int?
    public var detail: String

    enum CodingKeys: String, CodingKey {
        case category, identifier, row, ledger_seq, age_days, detail
    }

    /// The finding as one line of JSON with sorted keys, as JSONEncoder would write it (by hand: a million findings
    /// through JSONEncoder took minutes).
    public var jsonLine: String {
        func number<T: BinaryInteger>(_ v: T?) -> String { v.map { String($0) } ?? "null" }
        return
            "{\"age_days\":\(number(age_days)),\"category\":\"\(category.rawValue)\",\"detail\":\(Self.quote(detail)),"
            + "\"identifier\":\(Self.quote(identifier)),\"ledger_seq\":\(number(ledger_seq)),\"row\":\(number(row))}\n"
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped; slashes and non-ASCII as they are.
    static func quote(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    out += String(format: "\\u%04x", u.value)
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }

    /// Absent values are written as null, so every finding has the same keys.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(category, forKey: .category)
        try c.encode(identifier, forKey: .identifier)
        try c.encode(row, forKey: .row)
        try c.encode(ledger_seq, forKey: .ledger_seq)
        try c.encode(age_days, forKey: .age_days)
        try c.encode(detail, forKey: .detail)
    }
}

/// The export formats reconcile reads.
public enum ReconcileInputFormat: String, Sendable, CaseIterable {
    case auto, csv, json
}

/// What reconcile counted.
public struct ReconcileSummary: Sendable, Encodable {
    public var export: String
    public var format: String
    public var export_rows: Int
    public var ledger_records_in_scope: Int
    public var matched: Int
    /// Export devices whose ledger record lies outside `--profile` / `--work-order`.
    public var out_of_scope: Int
    /// Revoked or failed records the backend does not have, as it should be.
    public var revoked_absent: Int
    public var failed_absent: Int
    public var counts: [String: Int]
    public var station_id: String
    public var ledger_head_seq: Int64
    @Nullable public var profile: String?
    @Nullable public var work_order: String?
    public var reconciled_at: String
    /// What limited the comparison (a CA certificate that could not be read).
    public var warnings: [String]

    /// 0 when everything matched, 6 when the backend knows devices never issued here (the alarm), else 5.
    public var exitStatus: Int32 {
        if (counts[ReconcileCategory.notIssuedHere.rawValue] ?? 0) > 0 { return 6 }
        return counts.values.contains { $0 > 0 } ? 5 : 0
    }
}

/// Findings kept on disk, one JSON-lines file per category, so a million of them cost no memory; the first few of
/// each category are also kept for the console.
public final class FindingStore {
    public static let examplesPerCategory = 20
    public private(set) var counts: [ReconcileCategory: Int] = [:]
    public private(set) var examples: [ReconcileCategory: [ReconcileFinding]] = [:]
    private let directory: String
    private var streams: [ReconcileCategory: BufferedFileOutputStream] = [:]

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/keyline-reconcile-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw KeylineError(.ioError, "cannot create a temporary directory under \(NSTemporaryDirectory())")
        }
        directory = String(cString: made)
    }

    deinit {
        for s in streams.values { s.close() }
        try? FileManager.default.removeItem(atPath: directory)
    }

    func add(_ f: ReconcileFinding) throws {
        counts[f.category, default: 0] += 1
        if examples[f.category, default: []].count < Self.examplesPerCategory {
            examples[f.category, default: []].append(f)
        }
        let stream: BufferedFileOutputStream
        if let s = streams[f.category] {
            stream = s
        } else {
            guard let s = BufferedFileOutputStream(path: "\(directory)/\(f.category.rawValue).jsonl", mode: 0o600)
            else {
                throw KeylineError(.ioError, "cannot write findings under \(directory)")
            }
            s.open()
            streams[f.category] = s
            stream = s
        }
        let line = Array(f.jsonLine.utf8)
        guard line.withUnsafeBufferPointer({ stream.write($0.baseAddress!, maxLength: $0.count) }) == line.count else {
            throw KeylineError(.ioError, "cannot write findings under \(directory) (disk full?)")
        }
    }

    /// Ends writing; call before reading.
    func seal() throws {
        for s in streams.values where !s.finish() {
            throw KeylineError(.ioError, "cannot write findings under \(directory) (disk full?)")
        }
        streams = [:]
    }

    /// Every finding of `category`, in the order found, read back one at a time.
    public func forEach(_ category: ReconcileCategory, _ body: (ReconcileFinding) throws -> Void) throws {
        let decoder = JSONDecoder()
        try forEachLine(category) { line in try body(try decoder.decode(ReconcileFinding.self, from: Data(line))) }
    }

    /// Every finding of `category` as the JSON line it was stored as (without the line break): for output that is
    /// JSON anyway, no decoding and encoding again.
    public func forEachLine(_ category: ReconcileCategory, _ body: (ArraySlice<UInt8>) throws -> Void) throws {
        let path = "\(directory)/\(category.rawValue).jsonl"
        guard counts[category, default: 0] > 0, let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        var pending: [UInt8] = []
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            pending.append(contentsOf: chunk)
            var start = 0
            while let nl = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
                try body(pending[start..<nl])
                start = nl + 1
            }
            pending.removeFirst(start)
        }
    }
}

/// A device as the backend's export describes it.
struct BackendDevice {
    var identifier: String
    var row: Int
    var productPRN: String?
    var productName: String?
    /// nil when the export does not say; "" when it says none.
    var cohortPRN: String?
    var tags: [String]?
    var certificates: [PresentedCertificate]
    /// False when the export marks the device quarantined or deactivated.
    var active: Bool
}

/// A certificate the backend holds for a device: its SHA-256, and its DER when the export gave the PEM.
struct PresentedCertificate {
    var fingerprint: String
    var der: [UInt8]?
}

/// `keyline ledger reconcile`: compares the ledger with what the backend knows, streaming both sides.
///
/// The export is read once, in batches: each batch's identifiers are looked up in one ledger read, and the latest
/// record of every identifier seen is marked in a bitmap indexed by ledger sequence number (one bit per record).
/// Then the ledger is streamed once to find what the backend never saw. Memory: the bitmap and one batch.
public struct Reconciler {
    public var station: Station
    public var scope: RecordQuery
    public var now: Date
    static let batchSize = 2048

    public init(station: Station, profile: String?, workOrder: String?, now: Date = Date()) {
        self.station = station
        self.scope = RecordQuery(profile: profile, workOrder: workOrder)
        self.now = now
    }

    /// Runs the comparison; findings are in the returned store (most alarming category first when read back).
    public func run(exportPath: String, format: ReconcileInputFormat) async throws -> (ReconcileSummary, FindingStore) {
        let format = try Self.resolve(format, path: exportPath)
        let store = try FindingStore()
        var state = try await ReconcileState(station: station, scope: scope, store: store)
        var batch: [BackendDevice] = []
        var rows = 0
        func flush() async throws {
            try await state.process(batch)
            batch.removeAll(keepingCapacity: true)
        }
        try await ExportReader.read(path: exportPath, format: format) { device in
            rows += 1
            batch.append(device)
            if batch.count >= Self.batchSize { try await flush() }
        }
        try await flush()
        let missing = try await state.finishLedgerSide(now: now)
        try store.seal()
        var counts: [String: Int] = [:]
        for c in ReconcileCategory.allCases { counts[c.rawValue] = store.counts[c] ?? 0 }
        let summary = ReconcileSummary(
            export: exportPath, format: format.rawValue, export_rows: rows, ledger_records_in_scope: missing.inScope,
            matched: state.matched, out_of_scope: state.outOfScope, revoked_absent: missing.revokedAbsent,
            failed_absent: missing.failedAbsent, counts: counts, station_id: station.config.stationID,
            ledger_head_seq: state.headSeq, profile: scope.profile, work_order: scope.workOrder,
            reconciled_at: Timestamp.isoMillis(now), warnings: state.warnings)
        return (summary, store)
    }

    static func resolve(_ format: ReconcileInputFormat, path: String) throws -> ReconcileInputFormat {
        guard format == .auto else { return format }
        switch (path as NSString).pathExtension.lowercased() {
        case "csv": return .csv
        case "json", "jsonl", "ndjson": return .json
        default: break
        }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw KeylineError(.ioError, "cannot read \(path)")
        }
        defer { try? handle.close() }
        let head = ExportReader.stripBOM((try? handle.read(upToCount: 4096)) ?? Data())
        let first = head.first { !$0.isASCIIWhitespace }
        return first == UInt8(ascii: "[") || first == UInt8(ascii: "{") ? .json : .csv
    }
}

extension UInt8 {
    var isASCIIWhitespace: Bool { self == 0x20 || self == 0x0A || self == 0x0D || self == 0x09 }
}

extension String {
    /// Without leading and trailing spaces, tabs and line breaks; on the UTF-8 bytes (Foundation's
    /// trimmingCharacters went through NSString, a tenth of a million-row reconcile).
    var asciiTrimmed: String {
        let u = utf8
        guard let first = u.firstIndex(where: { !$0.isASCIIWhitespace }) else { return "" }
        let last = u.lastIndex(where: { !$0.isASCIIWhitespace })!
        if first == u.startIndex && last == u.index(before: u.endIndex) { return self }
        return String(decoding: u[first...last], as: UTF8.self)
    }
}

/// The running comparison.
struct ReconcileState {
    let station: Station
    let ledger: any Ledger
    let scope: RecordQuery
    let store: FindingStore
    let cas: [IssuingCA]
    /// CAs of station.toml whose certificate could not be read: certificates under them cannot be recognised.
    var warnings: [String] = []
    let productNames: [String: String]
    let headSeq: Int64
    /// Bits per ledger seq: the record's identifier was seen in the export; its first row was counted as matched;
    /// the record is accounted for by another row (an identifier holding it under another name, an earlier
    /// certificate of a re-issued CN), so it is not absent from the backend.
    var seen: [UInt64]
    var firstMatched: [UInt64]
    var accounted: [UInt64]
    /// The export row on which each ledger record's identifier was first seen (for duplicates): 4 bytes a record.
    var firstRow: [UInt32]
    /// Unknown identifiers seen so far, with their first row (each is a finding already: grows only with anomalies).
    var unknownSeen: [String: Int] = [:]
    var matched = 0
    var outOfScope = 0

    init(station: Station, scope: RecordQuery, store: FindingStore) async throws {
        self.station = station
        self.ledger = station.ledger
        self.scope = scope
        self.store = store
        // Every CA the station knows, retired ones too: a certificate under any of them is ours to answer for.
        var cas: [IssuingCA] = []
        var warnings: [String] = []
        for c in station.config.cas.values.sorted(by: { $0.name < $1.name }) {
            do {
                cas.append(try CALoader.certificateOnly(c))
            } catch let e as KeylineError {
                warnings.append(
                    "CA '\(c.name)' cannot be read (\(e.reason)); certificates it signed are reported as foreign")
            }
        }
        self.cas = cas
        self.warnings = warnings
        productNames = station.config.profiles.compactMapValues { $0.jitp.productName }
        headSeq = try await station.ledger.head().seq
        let words = Int(headSeq / 64) + 1
        seen = Array(repeating: 0, count: words)
        firstMatched = Array(repeating: 0, count: words)
        accounted = Array(repeating: 0, count: words)
        firstRow = Array(repeating: 0, count: Int(headSeq) + 1)
    }

    static func test(_ bits: [UInt64], _ seq: Int64) -> Bool {
        seq >= 0 && Int(seq / 64) < bits.count && bits[Int(seq / 64)] & (1 << UInt64(seq % 64)) != 0
    }
    static func set(_ bits: inout [UInt64], _ seq: Int64, _ on: Bool) {
        guard seq >= 0 else { return }
        let w = Int(seq / 64)
        if w >= bits.count { bits.append(contentsOf: Array(repeating: 0, count: w - bits.count + 1)) }
        if on { bits[w] |= 1 << UInt64(seq % 64) } else { bits[w] &= ~(1 << UInt64(seq % 64)) }
    }

    mutating func process(_ batch: [BackendDevice]) async throws {
        guard !batch.isEmpty else { return }
        let latest = try await ledger.records(cns: Array(Set(batch.map(\.identifier))))
        for device in batch { try await classify(device, latest: latest[device.identifier]) }
    }

    /// Collects the most alarming category and every reason.
    struct Verdict {
        var category: ReconcileCategory?
        var details: [String] = []
        mutating func raise(_ c: ReconcileCategory, _ detail: String) {
            if category.map({ c < $0 }) ?? true { category = c }
            details.append(detail)
        }
    }

    static func repeatText(_ row: Int, first: Int?) -> String {
        "row \(row) repeats an identifier the export already listed" + (first.map { " (first at row \($0))" } ?? "")
    }

    mutating func classify(_ d: BackendDevice, latest: LedgerRecord?) async throws {
        guard let r = latest else {
            try await classifyUnknown(d)
            return
        }
        // A repeated row is still examined in full (a second row may carry a certificate the first did not); the
        // identifier then leaves the matched count, and the row is listed under its worst category.
        let repeated = Self.test(seen, r.seq)
        if repeated && Self.test(firstMatched, r.seq) {
            matched -= 1
            Self.set(&firstMatched, r.seq, false)
        }
        if !repeated {
            Self.set(&seen, r.seq, true)
            if Int(r.seq) < firstRow.count { firstRow[Int(r.seq)] = UInt32(clamping: d.row) }
        }
        // The records the presented certificates belong to, when they are not the current one (rare: one lookup).
        var others: [(PresentedCertificate, LedgerRecord?)] = []
        for cert in d.certificates where cert.fingerprint != r.content.certificateFingerprint {
            let other = try await ledger.records(RecordQuery(limit: 1, fingerprint: cert.fingerprint)).first
            // An earlier certificate of this CN (re-issued since) is accounted for here, not as absent.
            if let other, other.content.cn == r.content.cn { Self.set(&accounted, other.seq, true) }
            others.append((cert, other))
        }
        var v = Verdict()
        // In scope when the current record is, or when the device holds an earlier certificate of its CN that is
        // (a device re-issued outside the work order still answers for the one it had).
        let inScope =
            scope.matches(r)
            || others.contains { $0.1.map { $0.content.cn == r.content.cn && scope.matches($0) } ?? false }
        guard inScope else {
            // Out of scope, but a certificate under one of our CAs that the ledger lacks is an alarm whatever the
            // scope.
            for (cert, found) in others where found == nil {
                if let ca = ourCA(cert) { v.raise(.notIssuedHere, "holds \(describeOurs(cert, ca: ca))") }
            }
            if v.category != nil {
                try add(v, d, seq: r.seq)
            } else if !repeated {
                outOfScope += 1
            }
            return
        }
        let holdsCurrent = d.certificates.contains { $0.fingerprint == r.content.certificateFingerprint }
        for (cert, found) in others {
            if let other = found {
                if other.content.cn == r.content.cn {
                    if other.state != .revoked || d.active {
                        v.raise(
                            .revokedButActive,
                            "holds its earlier certificate (ledger seq \(other.seq), \(try await stateText(other))), replaced by seq \(r.seq)"
                        )
                    }
                } else {
                    v.raise(
                        .certificateMismatch,
                        "holds the certificate issued to CN '\(other.content.cn)' (ledger seq \(other.seq)), not its own (seq \(r.seq))"
                    )
                }
            } else if let ca = ourCA(cert) {
                v.raise(.notIssuedHere, "holds \(describeOurs(cert, ca: ca))")
            } else {
                v.raise(
                    .certificateMismatch,
                    "holds a certificate unknown to this ledger (\(issuerText(cert))), not the one issued here (seq \(r.seq), SHA-256 \(r.content.certificateFingerprint.prefix(16))…)"
                )
            }
        }
        if !d.certificates.isEmpty && !holdsCurrent && v.category == nil
            && others.allSatisfy({ $0.1?.content.cn != r.content.cn })
        {
            v.raise(.certificateMismatch, "does not hold the certificate issued here (seq \(r.seq))")
        }
        // Revoked here and active there: whether the export shows the certificate or lists the device alone.
        if (holdsCurrent || d.certificates.isEmpty) && r.state == .revoked && d.active {
            v.raise(
                .revokedButActive,
                "the backend still has it active, but its certificate (seq \(r.seq)) is \(try await stateText(r))")
        }
        for difference in attributeDifferences(d, r) { v.raise(.attributeMismatch, difference) }
        if repeated {
            let first = Int(r.seq) < firstRow.count ? Int(firstRow[Int(r.seq)]) : nil
            v.raise(.duplicateIdentifier, Self.repeatText(d.row, first: first))
        }
        if v.category == nil {
            matched += 1
            Self.set(&firstMatched, r.seq, true)
        } else {
            try add(v, d, seq: r.seq)
        }
    }

    /// An identifier the ledger has no record for.
    mutating func classifyUnknown(_ d: BackendDevice) async throws {
        var v = Verdict()
        var holdsOurs = false
        var descriptions: [String] = []
        for cert in d.certificates {
            if let other = try await ledger.records(RecordQuery(limit: 1, fingerprint: cert.fingerprint)).first {
                // A certificate issued here, under another identifier: the device is known by another name.
                Self.set(&accounted, other.seq, true)
                descriptions.append("the certificate issued here to CN '\(other.content.cn)' (ledger seq \(other.seq))")
                holdsOurs = true
            } else if let ca = ourCA(cert) {
                v.raise(
                    .notIssuedHere,
                    "no certificate was ever issued here for this identifier; it holds \(describeOurs(cert, ca: ca))")
            } else {
                descriptions.append("a certificate from a foreign CA (\(issuerText(cert)))")
            }
        }
        if v.category == nil {
            if holdsOurs && descriptions.count == d.certificates.count
                && !descriptions.contains(where: { $0.hasPrefix("a certificate from a foreign CA") })
            {
                v.raise(
                    .certificateMismatch,
                    "no certificate was issued here under this identifier, but it holds "
                        + descriptions.joined(separator: "; "))
            } else {
                v.raise(
                    .notIssuedHere,
                    "no certificate was ever issued here for this identifier"
                        + (descriptions.isEmpty ? "" : "; it holds " + descriptions.joined(separator: "; ")))
            }
        }
        if let first = unknownSeen[d.identifier] {
            v.raise(.duplicateIdentifier, Self.repeatText(d.row, first: first))
        } else {
            unknownSeen[d.identifier] = d.row
        }
        try add(v, d, seq: nil)
    }

    func add(_ v: Verdict, _ d: BackendDevice, seq: Int64?) throws {
        try store.add(
            ReconcileFinding(
                category: v.category!, identifier: d.identifier, row: d.row, ledger_seq: seq, age_days: nil,
                detail: v.details.joined(separator: "; ")))
    }

    /// "revoked here on DATE (reason rework; note: ...)", or the state for records that are not revoked.
    func stateText(_ r: LedgerRecord) async throws -> String {
        guard r.state == .revoked,
            let e = try await ledger.events(recordSeq: r.seq, limit: nil).last(where: { $0.content.kind == .revoked })
        else { return r.state.rawValue }
        return "revoked here on \(Timestamp.iso(e.content.at)) (\(e.content.detail))"
    }

    /// The CA of this station that signed `cert`, checked by signature, not by name alone.
    func ourCA(_ cert: PresentedCertificate) -> (IssuingCA, Certificate)? {
        guard let der = cert.der, let parsed = try? Certificate(derEncoded: der) else { return nil }
        for ca in cas where ca.certificate.subject == parsed.issuer {
            if ca.certificate.publicKey.isValidSignature(parsed.signature, for: parsed) { return (ca, parsed) }
        }
        return nil
    }

    func describeOurs(_ cert: PresentedCertificate, ca: (IssuingCA, Certificate)) -> String {
        "a certificate signed by this station's CA '\(ca.0.name)' (serial \(Hex.upper(ca.1.serialNumber.bytes)), SHA-256 \(cert.fingerprint.prefix(16))…) that is not in the ledger: the CA key may have leaked"
    }

    func issuerText(_ cert: PresentedCertificate) -> String {
        guard let der = cert.der, let parsed = try? Certificate(derEncoded: der) else {
            return "SHA-256 \(cert.fingerprint.prefix(16))…"
        }
        return "issuer \(parsed.issuer), SHA-256 \(cert.fingerprint.prefix(16))…"
    }

    func attributeDifferences(_ d: BackendDevice, _ r: LedgerRecord) -> [String] {
        guard let a = r.content.attributes else { return [] }
        var out: [String] = []
        if let p = d.productPRN, p != (a.productPRN ?? "") {
            out.append("product: backend '\(p)', issued with '\(a.productPRN ?? "")'")
        } else if d.productPRN == nil, let name = d.productName, let expected = productNames[r.content.profile],
            name != expected
        {
            out.append("product: backend '\(name)', profile '\(r.content.profile)' has '\(expected)'")
        }
        if let c = d.cohortPRN, c != (a.cohortPRN ?? "") {
            out.append("cohort: backend '\(c)', issued with '\(a.cohortPRN ?? "")'")
        }
        if let tags = d.tags, Set(tags) != Set(a.tags) {
            out.append("tags: backend '\(tags.joined(separator: ","))', issued with '\(a.tags.joined(separator: ","))'")
        }
        return out
    }

    /// Streams the ledger once, sequence numbers and states only, for records in scope that the export never
    /// listed; only those are then read in full, for their findings (8 bytes each meanwhile: they are anomalies).
    mutating func finishLedgerSide(now: Date) async throws -> (inScope: Int, revokedAbsent: Int, failedAbsent: Int) {
        var inScope = 0
        var revokedAbsent = 0
        var failedAbsent = 0
        var absent: [Int64] = []
        let seen = self.seen
        let accounted = self.accounted
        try await ledger.forEachRecordState(scope) { seq, state in
            inScope += 1
            guard !Self.test(seen, seq) && !Self.test(accounted, seq) else { return }
            switch state {
            case .revoked: revokedAbsent += 1
            case .failed: failedAbsent += 1
            case .issued, .delivered: absent.append(seq)
            }
        }
        var start = 0
        while start < absent.count {
            let slice = Array(absent[start..<min(start + 500, absent.count)])
            start += slice.count
            for r in try await ledger.records(seqs: slice) {
                let days = max(0, Int(now.timeIntervalSince(r.content.createdAt) / 86_400))
                try store.add(
                    ReconcileFinding(
                        category: .missingInBackend, identifier: r.content.cn, row: nil, ledger_seq: r.seq,
                        age_days: days,
                        detail:
                            "\(r.state.rawValue) \(Timestamp.iso(r.content.createdAt)) under profile '\(r.content.profile)', \(days) day(s) ago; the backend has no such device"
                    ))
            }
        }
        return (inScope, revokedAbsent, failedAbsent)
    }

}

/// Reads the backend's export, CSV (the device import manifest's columns) or JSON (an array of devices or JSON
/// lines), one device at a time.
enum ExportReader {
    static func read(
        path: String, format: ReconcileInputFormat, _ body: (BackendDevice) async throws -> Void
    ) async throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw KeylineError(.ioError, "cannot read \(path)")
        }
        defer { try? handle.close() }
        switch format {
        case .csv, .auto: try await readCSV(handle, path: path, body)
        case .json: try await readJSON(handle, path: path, body)
        }
    }

    static func readCSV(
        _ handle: FileHandle, path: String, _ body: (BackendDevice) async throws -> Void
    ) async throws {
        var parser = CSVRowParser()
        var columns: [String: Int]?
        var pending: [([String], Int)] = []
        func take(_ fields: [String], _ line: Int) throws -> BackendDevice? {
            guard let columns else {
                var map: [String: Int] = [:]
                for (i, name) in fields.enumerated() {
                    map[name.asciiTrimmed.lowercased()] = i
                }
                for required in ["identifier", "certificates"] where map[required] == nil {
                    throw KeylineError(
                        .dataError,
                        "\(path): the header has no '\(required)' column (expected the device import manifest's columns: \(DeviceManifestRow.csvHeader.joined(separator: ",")))"
                    )
                }
                columns = map
                return nil
            }
            func field(_ name: String) -> String? {
                guard let i = columns[name], i < fields.count else { return nil }
                return fields[i]
            }
            let identifier = (field("identifier") ?? "").asciiTrimmed
            guard !identifier.isEmpty else {
                throw KeylineError(.dataError, "\(path) line \(line): empty identifier")
            }
            let tags = field("tags").map {
                $0.split(separator: ",").map { String($0).asciiTrimmed }.filter { !$0.isEmpty }
            }
            return BackendDevice(
                identifier: identifier, row: line, productPRN: field("product_prn").flatMap { $0.isEmpty ? nil : $0 },
                productName: field("product_name").flatMap { $0.isEmpty ? nil : $0 },
                cohortPRN: field("cohort_prn"), tags: tags,
                certificates: try certificates(field("certificates") ?? "", where: "\(path) line \(line)"),
                active: !(isInactive(field("status")) || isInactive(field("quarantined"))))
        }
        var first = true
        while var chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            if first {
                chunk = stripBOM(chunk)
                first = false
            }
            parser.feed([UInt8](chunk)) { fields, line in pending.append((fields, line)) }
            for (fields, line) in pending {
                if let device = try take(fields, line) { try await body(device) }
            }
            pending.removeAll(keepingCapacity: true)
        }
        guard parser.finish({ fields, line in pending.append((fields, line)) }) else {
            throw KeylineError(.dataError, "\(path): a quoted field starting on line \(parser.rowLine) never closes")
        }
        for (fields, line) in pending {
            if let device = try take(fields, line) { try await body(device) }
        }
        if columns == nil { throw KeylineError(.dataError, "\(path) is empty (expected a header row)") }
    }

    /// Drops a UTF-8 byte order mark (spreadsheets write one) from the start of the file.
    static func stripBOM(_ chunk: Data) -> Data {
        chunk.starts(with: [0xEF, 0xBB, 0xBF]) ? chunk.dropFirst(3) : chunk
    }

    static func isInactive(_ value: String?) -> Bool {
        guard let v = value?.trimmingCharacters(in: .whitespaces).lowercased() else { return false }
        return ["true", "1", "yes", "quarantined", "deactivated", "inactive", "disabled"].contains(v)
    }

    static func readJSON(
        _ handle: FileHandle, path: String, _ body: (BackendDevice) async throws -> Void
    ) async throws {
        var splitter = JSONObjectSplitter()
        var objects: [[UInt8]] = []
        var index = 0
        func take(_ bytes: [UInt8]) throws -> BackendDevice {
            index += 1
            let place = "\(path) device \(index)"
            guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
                throw KeylineError(.dataError, "\(place): not a JSON object")
            }
            guard let identifier = (object["identifier"] as? String)?.asciiTrimmed,
                !identifier.isEmpty
            else {
                throw KeylineError(.dataError, "\(place): missing 'identifier'")
            }
            func string(_ key: String) -> String? {
                if object[key] is NSNull { return "" }
                return object[key] as? String
            }
            var tags: [String]?
            if let list = object["tags"] as? [String] {
                tags = list
            } else if let text = object["tags"] as? String {
                tags = text.split(separator: ",").map { String($0).asciiTrimmed }
            }
            var certTexts: [String] = []
            if let list = object["certificates"] as? [Any] {
                for item in list {
                    if let s = item as? String {
                        certTexts.append(s)
                    } else if let o = item as? [String: Any],
                        let s = (o["certificate"] ?? o["pem"] ?? o["fingerprint"] ?? o["sha256"]) as? String
                    {
                        certTexts.append(s)
                    } else {
                        throw KeylineError(
                            .dataError, "\(place): 'certificates' entries must be PEM text or SHA-256 fingerprints")
                    }
                }
            } else if let s = object["certificates"] as? String {
                certTexts = [s]
            }
            if let fps = object["certificate_fingerprints"] as? [String] { certTexts += fps }
            var inactive = (object["quarantined"] as? Bool) == true
            if let status = object["status"] as? String { inactive = inactive || isInactive(status) }
            if let active = object["active"] as? Bool { inactive = inactive || !active }
            return BackendDevice(
                identifier: identifier, row: index, productPRN: string("product_prn").flatMap { $0.isEmpty ? nil : $0 },
                productName: string("product_name").flatMap { $0.isEmpty ? nil : $0 },
                cohortPRN: object.keys.contains("cohort_prn") ? (string("cohort_prn") ?? "") : nil, tags: tags,
                certificates: try certTexts.flatMap { try certificates($0, where: place) }, active: !inactive)
        }
        do {
            var first = true
            while var chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
                if first {
                    chunk = stripBOM(chunk)
                    first = false
                }
                try splitter.feed([UInt8](chunk)) { objects.append($0) }
                for o in objects { try await body(try take(o)) }
                objects.removeAll(keepingCapacity: true)
            }
            try splitter.finish()
        } catch let failure as JSONObjectSplitter.Failure {
            switch failure {
            case .truncated: throw KeylineError(.dataError, "\(path): the JSON ends inside a device object")
            case .unexpected(let byte, let offset):
                throw KeylineError(
                    .dataError,
                    "\(path): unexpected '\(Character(Unicode.Scalar(byte)))' at byte \(offset) (expected a JSON array of device objects, or one object per line)"
                )
            }
        }
    }

    /// The certificates in one export field: PEM blocks (joined by blank lines in the device import manifest), or
    /// SHA-256 fingerprints (hex, colons allowed) separated by white space, commas or semicolons.
    static func certificates(_ text: String, where place: String) throws -> [PresentedCertificate] {
        let bytes = Array(text.utf8)
        if PEMBlocks.containsCertificate(bytes) {
            do {
                return try PEMBlocks.certificates(in: bytes).map { der in
                    guard !der.isEmpty else { throw PEMBlocks.Failure.badBase64 }
                    return PresentedCertificate(fingerprint: Hex.sha256(der), der: der)
                }
            } catch PEMBlocks.Failure.unterminated {
                throw KeylineError(.dataError, "\(place): a PEM certificate has no END line")
            } catch {
                throw KeylineError(.dataError, "\(place): a PEM certificate is not valid base64")
            }
        }
        return try text.split(whereSeparator: { $0.isWhitespace || $0 == "," || $0 == ";" }).map { token in
            var t = token.lowercased()
            if t.hasPrefix("sha256:") { t.removeFirst("sha256:".count) }
            t.removeAll { $0 == ":" }
            guard t.count == 64, t.allSatisfy(\.isHexDigit) else {
                throw KeylineError(
                    .dataError, "\(place): '\(token.prefix(20))' is neither a PEM certificate nor a SHA-256 fingerprint"
                )
            }
            return PresentedCertificate(fingerprint: t.uppercased(), der: nil)
        }
    }
}
