import ArgumentParser
import Crypto
import Foundation
import KeylineCore
import KeylineCustody
import KeylineLedger
import KeylineStation
import X509

#if canImport(Glibc)
    import Glibc
#endif

struct IssueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue",
        abstract: "Make device keypairs on the station and issue their certificates.",
        discussion: """
            For each CN, makes a P-256 keypair and issues its certificate under the profile's policy, then writes \
            OUT/<CN>.key (PKCS#8 PEM, mode 0600), OUT/<CN>.pem and OUT/<CN>.chain.pem (leaf, issuing CA, root), and \
            OUT/index.csv. The private key is never stored in the ledger or logged.

            Batches (--count) commit in chunks, all or nothing per chunk, and resume: run the same command again after \
            an interruption and the CNs already complete are skipped. Keys of a chunk are staged as <CN>.key.partial \
            and flushed before the chunk commits, so a committed certificate never loses its key to a crash.

            Examples:
              keyline issue dev-0001 dev-0002 --out batch
              keyline issue --count 1000 --cn-template 'SN-{seq:06}' --out batch-42

            A reworked device whose certificate was revoked ('keyline ledger revoke CN --reason rework') is issued \
            again only with --reissue; without it a known CN is refused (unique-cn, exit 3).
            """
    )

    @OptionGroup var options: StationOptions
    @Argument(help: "CNs to issue (or use --count with --cn-template).") var cns: [String] = []
    @Option(name: .long, help: "Issue this many devices named by --cn-template.") var count: Int?
    @Option(name: .long, help: "CN template with {seq} or {seq:0N}, e.g. 'SN-{seq:06}'.") var cnTemplate: String?
    @Option(name: .long, help: "First sequence number for --cn-template.") var start: Int = 1
    @Option(name: .long, help: ArgumentHelp("Output directory.", valueName: "DIR")) var out: String
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Most certificates committed per transaction (1-10000). Each commit rewrites the index pages its records touch; fewer, larger commits write fewer pages per certificate. A batch starts and ends with smaller commits (250, 500, ... up to N/2, as many as the batch can fill; none when N is below 500), so the key files staged before the first commit and the files written after the last take little time.",
            valueName: "N"))
    var chunk: Int = 2000
    @Option(
        name: .long, help: "Work order recorded with each certificate (manifest devices --work-order selects by it).")
    var workOrder: String?
    @Option(name: .long, help: "Issuance profile (default: 'default').") var profile: String?
    @Option(name: .long, help: ArgumentHelp("File holding the CA key's passphrase (mode 0600).", valueName: "FILE"))
    var passphraseFile: String?
    @Option(name: .long, help: "Operator recorded with each certificate.") var `operator`: String?
    @Flag(
        name: .long,
        help:
            "Issue CNs again whose certificates were revoked (rework); each new record names the one it replaces. Use a fresh --out directory."
    )
    var reissue = false

    func validate() throws {
        if count == nil && cns.isEmpty { throw ValidationError("give CNs, or --count N with --cn-template") }
        if count != nil && !cns.isEmpty { throw ValidationError("give either CNs or --count, not both") }
        if let count {
            guard count > 0 else { throw ValidationError("--count must be positive") }
            guard cnTemplate != nil else { throw ValidationError("--count needs --cn-template, e.g. 'SN-{seq:06}'") }
            guard start >= 0 else { throw ValidationError("--start must not be negative") }
        }
        guard chunk > 0 && chunk <= 10_000 else { throw ValidationError("--chunk must be 1...10000") }
        if Set(cns).count != cns.count { throw ValidationError("a CN is given twice") }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            let names: [String]
            if let count, let cnTemplate {
                let template = try CNTemplate(cnTemplate)
                names = (start..<(start + count)).map(template.render)
            } else {
                names = cns
            }
            let station = try await options.openStation()
            // Opening the CA key (PBKDF2) keeps one core busy for a fifth of a second or more. Meanwhile, on other
            // threads, the file system OUT will be on is flushed of what earlier work left unwritten (else the first
            // chunk's flush writes it, with every core waiting), the ledger is asked for the batch's CNs and the CNs
            // are checked against the profile's rule. What the lookup and the check find is acted on only after the
            // key opened, as before: a CA that cannot sign is still reported before any CN.
            Self.flushAhead(of: out)
            async let lookup = station.ledger.records(cns: names)
            let rule = (try? station.config.profile(profile)).flatMap { try? CNRule(pattern: $0.cnPattern) }
            async let precheck = rule?.refusals(names)
            let issuer = try await openIssuer(
                station: station, profileName: profile, passphraseFile: passphraseFile, operatorOption: `operator`)
            // The check counts only if it used the rule of the profile the issuer opened.
            var cnRefusals = await precheck
            if rule?.pattern != issuer.policy.cnRule.pattern { cnRefusals = nil }
            // The station makes P-256 keys; a profile that does not allow them must not get them.
            if case .refuse(let rule, let reason) = issuer.policy.checkKey(.ecP256) {
                try await issuer.refuse(.refused(rule, "station-made keys are P-256: " + reason), cn: names.first)
            }
            try createDirectory(out)
            let batch = BatchWriter(directory: out, chainPEM: try issuer.chainPEM)

            // Sort the names: complete ones are skipped, CNs already in the ledger without our files are refused.
            var todo: [String] = []
            var skipped = 0
            let known = try await lookup
            let refusals = cnRefusals ?? issuer.policy.cnRule.refusals(names)
            for (i, cn) in names.enumerated() {
                if let verdict = refusals[i] { try await issuer.enforce(verdict, cn: cn) }
                if let record = known[cn] {
                    // A revoked CN given --reissue gets a new certificate; the ledger checks the rest.
                    if reissue && record.state == .revoked {
                        // The revoked certificate's key must not be mistaken for the new one after a crash.
                        let stale = (out as NSString).appendingPathComponent("\(cn).key")
                        if FileManager.default.fileExists(atPath: stale) {
                            throw KeylineError(
                                .usage,
                                "\(stale) exists (the key of the revoked certificate); give --reissue a fresh --out directory"
                            )
                        }
                        todo.append(cn)
                        continue
                    }
                    if try batch.finishIfStaged(record: record) {
                        skipped += 1
                        continue
                    }
                    let error =
                        reissue
                        ? (Reservation(cn: cn, publicKeySHA256: "", reissue: true).cnRefusal(latest: record)
                            ?? .refused("reissue", "CN '\(cn)' cannot be re-issued"))
                        : KeylineError.refused(
                            "unique-cn",
                            "CN '\(cn)' was already issued (ledger seq \(record.seq), \(record.state.rawValue)) and its key is not in \(out)"
                                + (record.state == .revoked
                                    ? "; a reworked device may be issued again with --reissue" : ""))
                    _ = try? await station.ledger.recordRefusal(
                        cn: cn, reason: error.reason, operatorName: issuer.operatorName, at: Date())
                    throw error
                }
                todo.append(cn)
            }
            if skipped > 0 { Console.note("resuming: \(skipped) already issued in \(out), \(todo.count) to go") }

            let progress = Progress(total: names.count, done: skipped)
            var slices: [[String]] = []
            var first = 0
            for size in ChunkPlan.sizes(total: todo.count, chunk: chunk) {
                slices.append(Array(todo[first..<(first + size)]))
                first += size
            }
            // index.csv is built from what this run knows (the records found above and those it commits), so the
            // ledger is not read a second time at the end.
            var index = known.mapValues { BatchWriter.indexLine($0.content) }
            // The next chunk's keys are made and staged on a thread behind this chunk's signing and commit.
            var ahead = slices.first.map { (slice: $0, keys: Self.prepare($0, with: batch)) }
            // A committed chunk's files are written on another thread while the next chunk is staged, signed and
            // committed; at most one chunk is being written at a time.
            var writing: Task<Void, Error>?
            do {
                for (n, slice) in slices.enumerated() {
                    // This chunk's keys are staged durably before it commits.
                    let staging = ahead!.keys
                    ahead = nil
                    let keys: [StagedKey]
                    do {
                        keys = try await staging.value
                    } catch {
                        batch.unstage(slice)
                        throw error
                    }
                    if n + 1 < slices.count { ahead = (slices[n + 1], Self.prepare(slices[n + 1], with: batch)) }
                    let issued: [IssuedCertificate]
                    do {
                        issued = try await issuer.issueBatch(
                            keys.map(\.request),
                            origin: .station, workOrder: workOrder, reissue: reissue)
                    } catch {
                        // Normally nothing of the chunk committed; but a commit whose outcome is unknown (an I/O
                        // error) or an error after it may leave records whose keys are only here: those stay, and
                        // a rerun completes them. When the ledger cannot be asked, every key stays.
                        if let held = try? await station.ledger.records(cns: slice) {
                            let committed = Set(
                                keys.filter {
                                    held[$0.cn]?.content.publicKeySHA256 == $0.request.publicKeySHA256
                                }.map(\.cn))
                            batch.unstage(slice.filter { !committed.contains($0) })
                        }
                        throw error
                    }
                    for item in issued { index[item.record.content.cn] = BatchWriter.indexLine(item.record.content) }
                    try await writing?.value
                    writing = Self.complete(issued, with: batch)
                    progress.advance(by: slice.count)
                }
                try await writing?.value
            } catch {
                // Whatever failed, the committed chunk being written is finished first, and the keys staged for a
                // chunk that will not commit are deleted.
                _ = try? await writing?.value
                if let ahead {
                    _ = try? await ahead.keys.value
                    batch.unstage(ahead.slice)
                }
                throw error
            }
            progress.finish()
            try SafeFile.syncFileSystem(of: out)
            try batch.writeIndex(names: names, lines: index)
            Console.note("issued \(todo.count), skipped \(skipped), in \(out)")
        }
    }
}

extension IssueCommand {
    /// Flushes the file system that will hold `out` (its nearest existing directory) on a thread of its own. A
    /// failure is left to the first chunk's own flush, which reports it.
    static func flushAhead(of out: String) {
        _ = Parallel.startBehind {
            var dir = out.isEmpty ? "." : out
            while !FileManager.default.fileExists(atPath: dir) && dir != "/" && dir != "." {
                let parent = (dir as NSString).deletingLastPathComponent
                dir = parent.isEmpty ? "." : parent
            }
            try? SafeFile.syncFileSystem(of: dir)
        }
    }

    /// Makes one P-256 key per CN and stages them (``BatchWriter/stage(_:)``), on a thread behind the critical path.
    static func prepare(_ cns: [String], with batch: BatchWriter) -> Task<[StagedKey], Error> {
        Parallel.startBehind {
            let keys = try cns.map { try StagedKey(cn: $0) }
            try batch.stage(keys)
            return keys
        }
    }

    /// Writes a committed chunk's certificate files and moves its keys into place, in the background.
    static func complete(_ issued: [IssuedCertificate], with batch: BatchWriter) -> Task<Void, Error> {
        Parallel.startBehind { for item in issued { try batch.complete(cn: item.record.content.cn, pem: item.pem) } }
    }
}

/// A station-made key, its PEM (PKCS #8, as `pemRepresentation` gives it) and the request for its certificate,
/// made on the key-generation cores.
struct StagedKey: Sendable {
    let cn: String
    let pem: String
    let request: Issuer.Request

    /// A new P-256 key for `cn`. Its point is encoded here once, for the request's SubjectPublicKeyInfo, and the PEM
    /// is made from that and the scalar (the certificate's own SPKI, made by swift-certificates, encodes it once
    /// more). The scalar and the DER are wiped once the PEM holds them.
    init(cn: String) throws {
        var (key, scalar) = DeviceKeys.p256WithScalar()
        defer { SystemRandom.wipe(&scalar) }
        self.cn = cn
        self.request = Issuer.Request(cn: cn, publicKey: Certificate.PublicKey(key.publicKey))
        let x963 = try CertificateFactory.subjectPublicKeyBits(spki: request.subjectPublicKeyInfo)
        var der = try CertificateFactory.pkcs8P256(scalar: scalar, x963: x963)
        defer { SystemRandom.wipe(&der) }
        self.pem = PEM.encode(der, label: "PRIVATE KEY")
    }
}

/// Writes a batch's files in the order that keeps keys and certificates safe across crashes.
struct BatchWriter: Sendable {
    let directory: String
    let chainPEM: String

    func path(_ cn: String, _ ext: String) -> String { (directory as NSString).appendingPathComponent("\(cn).\(ext)") }

    /// Writes each key to CN.key.partial (0600), then flushes the file system once for the whole chunk.
    func stage(_ keys: [StagedKey]) throws {
        for staged in keys {
            try SafeFile.writeInPlace(Array((staged.pem + "\n").utf8), to: path(staged.cn, "key.partial"), mode: 0o600)
        }
        try SafeFile.syncFileSystem(of: directory)
    }

    func unstage(_ cns: [String]) {
        for cn in cns { unlink(path(cn, "key.partial")) }
    }

    /// After the commit: the certificate files, then the key moves to its final name.
    func complete(cn: String, pem: String) throws {
        // In place: the key's rename below is what marks the CN complete, so a crash before it leaves a .partial
        // key that the next run finishes by writing these again.
        try SafeFile.writeInPlace(Array((pem + "\n").utf8), to: path(cn, "pem"))
        try SafeFile.writeInPlace(Array((pem + "\n" + chainPEM).utf8), to: path(cn, "chain.pem"))
        guard rename(path(cn, "key.partial"), path(cn, "key")) == 0 else {
            throw KeylineError(.ioError, "cannot move \(path(cn, "key.partial")) into place")
        }
    }

    /// For a CN already in the ledger: true when its files are complete here, or when its staged key matches the
    /// ledger's certificate (an interrupted chunk) and the files were finished now.
    func finishIfStaged(record: LedgerRecord) throws -> Bool {
        let fm = FileManager.default
        let cn = record.content.cn
        let keyPath = fm.fileExists(atPath: path(cn, "key")) ? path(cn, "key") : path(cn, "key.partial")
        guard let keyData = fm.contents(atPath: keyPath),
            let key = try? P256.Signing.PrivateKey(pemRepresentation: String(decoding: keyData, as: UTF8.self)),
            CertificateFactory.publicKeyFingerprint(Certificate.PublicKey(key.publicKey))
                == record.content.publicKeySHA256
        else { return false }
        let pem = PEM.encode(record.content.certificateDER, label: "CERTIFICATE")
        // The files must hold exactly what the ledger says (a power cut can leave a renamed key beside an empty
        // certificate file); rewrite them when they do not.
        let intact =
            fm.contents(atPath: path(cn, "pem")) == Data((pem + "\n").utf8)
            && fm.contents(atPath: path(cn, "chain.pem")) == Data((pem + "\n" + chainPEM).utf8)
        if keyPath.hasSuffix(".partial") || !intact {
            if !keyPath.hasSuffix(".partial") {
                try SafeFile.writeInPlace(Array(keyData), to: path(cn, "key.partial"), mode: 0o600)
            }
            try complete(cn: cn, pem: pem)
        }
        return true
    }

    /// index.csv's line for one record.
    static func indexLine(_ r: RecordContent) -> String {
        "\(r.cn),\(r.serialHex),\(r.certificateFingerprint),\(Timestamp.iso(r.notAfter)),\(r.cn).key,\(r.cn).pem\n"
    }

    /// index.csv for every CN of the batch in the order given, from each CN's latest record (so a resumed batch
    /// lists everything).
    func writeIndex(names: [String], lines: [String: String]) throws {
        var csv = "cn,serial,fingerprint,not_after,key_file,cert_file\n"
        for cn in names { if let line = lines[cn] { csv += line } }
        try SafeFile.write(csv, to: (directory as NSString).appendingPathComponent("index.csv"))
    }
}

/// A progress bar on standard error when it is a terminal; silent otherwise.
final class Progress {
    let total: Int
    var done: Int
    let enabled = isatty(STDERR_FILENO) == 1

    init(total: Int, done: Int) {
        self.total = total
        self.done = done
    }

    func advance(by n: Int) {
        done += n
        guard enabled, total > 0 else { return }
        let width = 30
        let filled = width * done / total
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write(Data("\r[\(bar)] \(done)/\(total)".utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
