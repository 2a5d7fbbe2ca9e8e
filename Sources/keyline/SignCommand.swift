import ArgumentParser
import Foundation
import KeylineCore
import KeylineCustody
import KeylineStation

struct SignCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Sign device CSRs with the profile's CA; each is committed to the ledger before it is written.",
        discussion: """
            CSR files may be PEM or DER; '-' reads standard input; a directory stands for every regular file named \
            *.csr directly in it, in byte order of the names (as 'LC_ALL=C ls' lists them: zero-pad sequence \
            numbers, or SN-10 comes before SN-9). Give a batch of thousands as a directory: the command line \
            parser slows down with many arguments (5,000 paths take 0.9 s to parse, 20,000 take 12 s). Without \
            --out or --out-dir the certificates are printed on standard output. Nothing but the CN is taken from a \
            CSR: its other subject attributes and requested extensions (CA:TRUE above all) are ignored.

            Policy (each refusal names its rule, exit 3): proof-of-possession (the CSR's signature verifies), \
            signature-algorithm (SHA-256 or stronger), key-type (P-256; P-384 and RSA of 2048/3072/4096 bits or more when key_types allows), \
            cn / cn-pattern (exactly one CN, 1-64 characters, matching cn_pattern), unique-cn, unique-public-key, \
            validity (the CA must cover min_validity_days). Malformed input exits 65.

            With several CSRs, each is handled on its own; the exit status is that of the first failure. They are \
            signed in groups of --commit-group (default 64) with one ledger commit per group: the CSRs of a group are \
            checked and signed on every core, the group's records (and the refusals' events) are committed in one \
            transaction, and only then are its certificates written. --commit-group 1 commits each on its own.

            Examples:
              keyline sign device.csr --out device.pem
              keyline sign csrs/*.csr --out-dir certs --chain
              keyline sign incoming/ --out-dir signed/      # every incoming/*.csr
              cat device.csr | keyline sign - --profile line2
              keyline sign reworked.csr --reissue --out device.pem   # after 'keyline ledger revoke CN --reason rework'
            """
    )

    @OptionGroup var options: StationOptions
    @Argument(
        help: ArgumentHelp(
            "CSR files (PEM or DER), directories of *.csr files; '-' for standard input.", valueName: "CSR")) var csrs:
        [String]
    @Option(name: .long, help: "Issuance profile (default: 'default').") var profile: String?
    @Option(name: .long, help: ArgumentHelp("Write the certificate to FILE (one CSR only).", valueName: "FILE"))
    var out: String?
    @Option(name: .long, help: ArgumentHelp("Write each certificate to DIR/<CN>.pem.", valueName: "DIR")) var outDir:
        String?
    @Flag(name: .long, help: "Append the issuing CA (and the root when known) after each certificate.") var chain =
        false
    @Option(name: .long, help: ArgumentHelp("File holding the CA key's passphrase (mode 0600).", valueName: "FILE"))
    var passphraseFile: String?
    @Option(
        name: .long,
        help: "Operator recorded with each certificate (default: $KEYLINE_OPERATOR, station.toml, login name).")
    var `operator`: String?
    @Option(
        name: .long, help: "Work order recorded with each certificate (manifest devices --work-order selects by it).")
    var workOrder: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "For benchmarks: write a line per signed CSR to FILE: microseconds from reading it to its certificate written, and when it was read (microseconds after the first CSR was read).",
            valueName: "FILE"))
    var timings: String?
    @Option(
        name: .long,
        help: ArgumentHelp(
            "With several CSRs, commit up to N certificates per ledger transaction (1-1000; 1 commits each on its own).",
            valueName: "N"))
    var commitGroup: Int = 64
    @Option(name: .long, help: "Device hardware id recorded with the certificate (one CSR only).") var hardwareId:
        String?
    @Flag(
        name: .long,
        help:
            "Issue a CN again whose certificate was revoked (rework); the new record names the one it replaces. Refused for a CN that was never issued or is not revoked."
    )
    var reissue = false

    func validate() throws {
        if out != nil && outDir != nil { throw ValidationError("--out and --out-dir cannot be used together") }
        if csrs.filter({ $0 == "-" }).count > 1 { throw ValidationError("'-' (standard input) may be given once") }
        if !(1...1000).contains(commitGroup) { throw ValidationError("--commit-group must be 1-1000") }
    }

    func run() async throws {
        try await runReporting(verbose: options.verbose) {
            // After expansion (a directory may hold several), before the station is opened.
            let csrs = try Self.expand(self.csrs)
            if csrs.count > 1 {
                if out != nil { throw KeylineError(.usage, "--out takes one CSR; use --out-dir for several") }
                if hardwareId != nil { throw KeylineError(.usage, "--hardware-id takes one CSR") }
            }
            let station = try await options.openStation()
            let issuer = try await openIssuer(
                station: station, profileName: profile, passphraseFile: passphraseFile, operatorOption: `operator`)
            let chainPEM = chain ? try issuer.chainPEM : ""
            if let outDir { try createDirectory(outDir) }
            var firstFailure: KeylineError?
            var signed = 0
            let clock = ContinuousClock()
            let began = clock.now
            var timed: [(latency: Duration, readAt: Duration)] = []
            // The exit status is that of the first failure in command-line order (a group reports its unreadable
            // files before the others).
            var firstFailureIndex = Int.max
            func report(_ error: KeylineError, _ index: Int) {
                Console.error(
                    KeylineError(error.code, "\(error.reason) (\(csrs[index]))", rule: error.rule),
                    verbose: options.verbose)
                if index < firstFailureIndex {
                    firstFailure = error
                    firstFailureIndex = index
                }
            }
            // The records are durable now; only from here may a certificate leave the station. A file is replaced
            // atomically but not fsync'd: the ledger holds the certificate, so a file lost to a power cut is
            // re-exported with 'ledger show CN --pem', and the commit is the one fsync.
            func deliver(_ issued: IssuedCertificate) throws {
                try Self.write(issued, out: out, outDir: outDir, chainPEM: chainPEM)
                signed += 1
                Console.note(
                    "signed \(issued.record.content.cn) serial \(issued.record.content.serialHex) (ledger seq \(issued.record.seq))"
                )
            }
            if csrs.count == 1 || commitGroup == 1 {
                for (index, path) in csrs.enumerated() {
                    let started = clock.now
                    do {
                        let issued = try await issuer.sign(
                            csrBytes: try readInput(path), hardwareID: hardwareId, workOrder: workOrder,
                            reissue: reissue)
                        try deliver(issued)
                        timed.append((clock.now - started, started - began))
                    } catch let error as KeylineError {
                        report(error, index)
                    }
                }
            } else {
                for start in stride(from: 0, to: csrs.count, by: commitGroup) {
                    var indices: [Int] = []
                    var inputs: [[UInt8]] = []
                    var readAt: [ContinuousClock.Instant] = []
                    for index in start..<min(start + commitGroup, csrs.count) {
                        let started = clock.now
                        do {
                            inputs.append(try readInput(csrs[index]))
                            indices.append(index)
                            readAt.append(started)
                        } catch let error as KeylineError {
                            report(error, index)
                        }
                    }
                    let results: [Result<IssuedCertificate, KeylineError>]
                    do {
                        results = try await issuer.signEach(inputs, workOrder: workOrder, reissue: reissue)
                    } catch let error as KeylineError {
                        // Nothing of this group was committed: every CSR in it failed the same way.
                        for index in indices { report(error, index) }
                        continue
                    }
                    // Written one after another: creating the files on two cores at once was no faster here
                    // (2,700-3,200/s against 2,900/s for 2,000 CSRs) and, soon after many deletions, spent 8-13
                    // times the system time in ext4's inode allocation.
                    for (k, result) in results.enumerated() {
                        do {
                            try deliver(try result.get())
                            timed.append((clock.now - readAt[k], readAt[k] - began))
                        } catch let error as KeylineError {
                            report(error, indices[k])
                        }
                    }
                }
            }
            if csrs.count > 1 { Console.note("\(signed) signed, \(csrs.count - signed) refused") }
            if let timings {
                // One line per signed CSR: microseconds from reading it to its certificate written, and when it
                // was read (microseconds after the first CSR was read).
                func micros(_ d: Duration) -> Int64 {
                    d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
                }
                let first = timed.map(\.readAt).min() ?? .zero
                try SafeFile.write(
                    timed.map { "\(micros($0.latency)) \(micros($0.readAt - first))" }.joined(separator: "\n")
                        + "\n", to: timings)
            }
            if let firstFailure { throw ExitCode(firstFailure.exitStatus) }
        }
    }
}

extension SignCommand {
    /// The CSR files the arguments name, in order: a directory stands for every regular file (symbolic links
    /// followed) named `*.csr` in any case directly in it, hidden files skipped, in byte order of the names;
    /// anything else is kept as given.
    static func expand(_ arguments: [String]) throws -> [String] {
        var paths: [String] = []
        for argument in arguments {
            var isDirectory: ObjCBool = false
            guard argument != "-", FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory),
                isDirectory.boolValue
            else {
                paths.append(argument)
                continue
            }
            guard let dir = opendir(argument) else {
                throw KeylineError(
                    .ioError, "cannot list the directory \(argument): \(String(cString: strerror(errno)))")
            }
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                guard !name.hasPrefix("."), name.lowercased().hasSuffix(".csr") else { continue }
                var info = stat()
                let path = (argument as NSString).appendingPathComponent(name)
                if stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG { names.append(path) }
            }
            closedir(dir)
            guard !names.isEmpty else {
                throw KeylineError(.usage, "the directory \(argument) holds no *.csr files")
            }
            paths += names.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        }
        return paths
    }

    /// Writes one committed certificate where the options say; a failure says the certificate is in the ledger.
    static func write(_ issued: IssuedCertificate, out: String?, outDir: String?, chainPEM: String) throws {
        let pem = issued.pem + "\n" + chainPEM
        do {
            if let out {
                try SafeFile.write(pem, to: out, durable: false)
            } else if let outDir {
                try SafeFile.write(
                    pem, to: (outDir as NSString).appendingPathComponent("\(issued.record.content.cn).pem"),
                    durable: false)
            } else {
                Console.out(pem)
            }
        } catch let error as KeylineError {
            throw KeylineError(
                error.code,
                "\(error.reason) — the certificate for '\(issued.record.content.cn)' IS in the ledger (seq \(issued.record.seq)); re-export it with 'keyline ledger show \(issued.record.content.cn) --pem'"
            )
        }
    }
}

/// Reads a whole file, or standard input for '-'.
func readInput(_ path: String) throws -> [UInt8] {
    if path == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
    guard let data = FileManager.default.contents(atPath: path) else {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            throw KeylineError(.ioError, "cannot read \(path)\(isDir.boolValue ? " (a directory)" : "")")
        }
        throw KeylineError(.dataError, "\(path) does not exist")
    }
    return Array(data)
}

/// Creates an output directory (mode 0700 when new).
func createDirectory(_ path: String) throws {
    do {
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    } catch {
        throw KeylineError(.ioError, "cannot create directory \(path): \(error.localizedDescription)")
    }
}
