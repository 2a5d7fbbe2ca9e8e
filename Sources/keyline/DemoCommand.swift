import ArgumentParser
import Foundation
import KeylineCore
import KeylineLedger
import KeylineLine
import KeylineStation

#if canImport(Glibc)
    import Glibc
#endif

struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "The line in a box: the daemon, pseudo-terminal fixtures and simulated devices, some misbehaving.",
        discussion: """
            Creates the station if DIR has none (development CA, profile 'demo'), starts the daemon with K \
            pseudo-terminal fixtures and passes N simulated devices (keyline-devsim) through them, a few at a time \
            like an operator would, printing the operator's console as it goes. One device in ten reads back a \
            wrong certificate, one in ten drops the link while storing and one in fifteen talks garbage: those must \
            FAIL. One in ten cannot make keys and gets a station-made key: it must PASS.

            It ends with a summary and a device manifest of the devices delivered. Each device's stored \
            certificate stays under DIR/devices/<hardware-id>/.

            Exit status: 0 when every device ended as expected (good ones PASS with a stored certificate equal to \
            their delivered ledger record, bad ones FAIL), 1 otherwise; the usual statuses for station errors.

            Example:
              keyline demo --station demo-line --devices 20 --fixtures 3
            """)

    @Option(name: .long, help: ArgumentHelp("The station directory (created when missing).", valueName: "DIR"))
    var station: String
    @Option(name: .long, help: "How many simulated devices pass through the line.") var devices = 20
    @Option(name: .long, help: "How many pseudo-terminal fixtures.") var fixtures = 3
    @Option(name: .long, help: ArgumentHelp("The keyline-devsim binary (default: beside keyline).", valueName: "FILE"))
    var devsim: String?
    @Flag(name: .long, help: "Print more detail with errors.") var verbose = false

    func validate() throws {
        guard (1...10_000).contains(devices) else { throw ValidationError("--devices must be 1-10000") }
        guard (1...32).contains(fixtures) else { throw ValidationError("--fixtures must be 1-32") }
    }

    static let demoProfile = """

        # Added by `keyline demo`: simulated devices named DEMO-<run>-<nnnn>, their CN is their hardware id.
        [profiles.demo]
        ca = "dev"
        cn_pattern = '^DEMO-[0-9]+-[0-9]{4}$'
        cn_template = "{hardware_id}"
        validity_days = 365
        min_validity_days = 30
        product_name = "demo-board"
        product_prn = "prn:1:3f1c2a8e-7b4d-4e2f-9a61-0c5d8e7f1b23:product:9d2e4b71-5a3c-4f8e-b6d0-2c7a1e9f3b54"
        cohort_prn = "prn:1:3f1c2a8e-7b4d-4e2f-9a61-0c5d8e7f1b23:cohort:c4a7e2d9-1b6f-4c3a-8e5d-7f0b9a2c6e18"
        tags = ["demo", "keyline"]

        """

    /// What a simulated device does wrong, by its index on the line.
    static func misbehaviour(_ i: Int) -> (flags: [String], shouldPass: Bool, what: String) {
        if i % 15 == 11 { return (["--garbage"], false, "talks garbage") }
        switch i % 10 {
        case 3: return (["--wrong-readback"], false, "reads back a wrong certificate")
        case 6: return (["--no-keygen"], true, "cannot make keys")
        case 8: return (["--disconnect-mid-write"], false, "drops the link while storing")
        default: return ([], true, "well-behaved")
        }
    }

    func run() async throws {
        try await runReporting(verbose: verbose) {
            let dir = (station as NSString).standardizingPath
            let absolute = dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + "/" + dir
            let fm = FileManager.default
            if !fm.fileExists(atPath: "\(absolute)/\(StationConfig.fileName)") {
                let result = try await StationSetup.initialize(directory: absolute)
                Console.out("created station \(result.stationID) at \(absolute) with a development CA\n")
            }
            var config = try StationConfig.load(directory: absolute)
            if config.profiles["demo"] == nil {
                guard config.cas["dev"]?.status == .active else {
                    throw KeylineError(
                        .configuration,
                        "the station has no [profiles.demo] and no active CA 'dev' to add it with; run the demo on a new directory"
                    )
                }
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(absolute)/\(StationConfig.fileName)"))
                handle.seekToEndOfFile()
                handle.write(Data(Self.demoProfile.utf8))
                try handle.close()
                Console.out("added [profiles.demo] to \(absolute)/\(StationConfig.fileName)\n")
                config = try StationConfig.load(directory: absolute)
            }
            let devsimPath = try findDevsim()
            let fixtureDir = "\(absolute)/demo/fixtures"
            try fm.createDirectory(atPath: fixtureDir, withIntermediateDirectories: true)
            try fm.createDirectory(atPath: "\(absolute)/devices", withIntermediateDirectories: true)
            let run = nextRun(absolute)
            // Quick answers: a simulated device needs no 5 s grace, and the demo should not wait on the silent.
            config.daemon.responseTimeout = 2
            config.daemon.csrTimeout = 10
            config.daemon.storeTimeout = 5
            config.daemon.retries = 1
            config.daemon.failCooldown = 0
            let fixtureConfigs = (1...fixtures).map {
                FixtureConfig(
                    name: "fx-\($0)", transport: .tty(path: "\(fixtureDir)/fx-\($0)", baud: 115_200), profile: "demo")
            }
            for f in fixtureConfigs { unlink("\(fixtureDir)/\(f.name)") }
            var st = try await Station.open(directory: absolute)
            st.config = config
            let logPath = "\(absolute)/run/demo-\(run).jsonl"
            let reporter = try Reporter(
                stationID: config.stationID, logPath: logPath, color: isatty(1) != 0,
                console: { Console.out($0 + "\n") })
            let daemon = try await LineDaemon(
                station: st, fixtures: fixtureConfigs, reporter: reporter, passphraseFile: nil,
                operatorName: config.operatorName(option: nil), credentialsDirectory: nil)
            let plan = (0..<devices).map { i -> Plug in
                let m = Self.misbehaviour(i)
                return Plug(
                    hardwareID: String(format: "DEMO-%d-%04d", run, i + 1), flags: m.flags, shouldPass: m.shouldPass,
                    what: m.what)
            }
            let line = Line(
                plan: plan, fixtures: fixtureConfigs.map(\.name), fixtureDir: fixtureDir, devsim: devsimPath,
                devicesDir: "\(absolute)/devices", daemon: daemon)
            reporter.onDevice = { report in line.finished(report) }
            Console.out(
                "demo run \(run): \(devices) device(s) through \(fixtures) pseudo-terminal fixture(s); JSON log \(logPath)\n"
            )
            try line.start()
            try await daemon.run()
            line.unplugAll()
            let ok = try await summarize(
                st, reporter: reporter, line: line, plan: plan, run: run, directory: absolute)
            if !ok { throw ExitCode(1) }
        }
    }

    func findDevsim() throws -> String {
        if let devsim { return devsim }
        if let env = ProcessInfo.processInfo.environment["KEYLINE_DEVSIM_BIN"], !env.isEmpty { return env }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        let beside = me.deletingLastPathComponent().appendingPathComponent("keyline-devsim").path
        guard FileManager.default.isExecutableFile(atPath: beside) else {
            throw KeylineError(
                .unavailable, "keyline-devsim not found beside \(me.path); build it (swift build) or pass --devsim FILE"
            )
        }
        return beside
    }

    /// The demo's run number: one more than the last (kept in DIR/demo/runs), so hardware ids never repeat.
    func nextRun(_ dir: String) -> Int {
        let path = "\(dir)/demo/runs"
        let last =
            FileManager.default.contents(atPath: path).flatMap {
                Int(String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            } ?? 0
        try? Data("\(last + 1)\n".utf8).write(to: URL(fileURLWithPath: path))
        return last + 1
    }

    func summarize(
        _ station: Station, reporter: Reporter, line: Line, plan: [Plug], run: Int, directory: String
    ) async throws
        -> Bool
    {
        let reports = line.outcomes
        var unexpected: [String] = []
        for p in plan {
            guard let r = reports[p.hardwareID] else {
                unexpected.append("\(p.hardwareID): no outcome")
                continue
            }
            if r.passed != p.shouldPass {
                unexpected.append("\(p.hardwareID) (\(p.what)): \(r.passed ? "PASS" : "FAIL \(r.reason ?? "")")")
                continue
            }
            if r.passed {
                // The certificate the device stored must be the one the ledger says was delivered.
                let stored = FileManager.default.contents(atPath: "\(directory)/devices/\(p.hardwareID)/cert.pem")
                let der = stored.flatMap { try? PEMBlocks.certificates(in: Array($0)).first }
                let record = try await station.ledger.record(cn: p.hardwareID)
                if der.map(Hex.sha256) != record?.content.certificateFingerprint || record?.state != .delivered {
                    unexpected.append("\(p.hardwareID): stored certificate does not match its delivered ledger record")
                }
            }
        }
        let passed = reporter.devices.filter(\.passed).count
        Console.out("\nsummary: \(plan.count) device(s), \(passed) PASS, \(reporter.devices.count - passed) FAIL\n")
        var reasons: [String: Int] = [:]
        for r in reporter.devices where !r.passed {
            // Grouped by the reason's kind ("read-back does not match: the device holds ...").
            let reason = r.reason ?? "?"
            reasons[String(reason.split(separator: ":", maxSplits: 1).first ?? Substring(reason)), default: 0] += 1
        }
        for (reason, n) in reasons.sorted(by: { $0.value > $1.value }) { Console.out("  \(n) × \(reason)\n") }
        let manifest = "\(directory)/manifests/demo-\(run).csv"
        try FileManager.default.createDirectory(atPath: "\(directory)/manifests", withIntermediateDirectories: true)
        var query = RecordQuery(state: .delivered, profile: "demo")
        query.cnPrefix = "DEMO-\(run)-"
        if passed > 0 {
            let summary = try await DeviceManifestExporter(station: station, format: .csv, query: query).export(
                to: manifest)
            Console.out("device manifest: \(manifest) (\(summary.rows) delivered device(s))\n")
        }
        Console.out("stored certificates: \(directory)/devices/<hardware-id>/cert.pem\n")
        if unexpected.isEmpty {
            Console.out("every device ended as expected: PASS\n")
            return true
        }
        for u in unexpected { Console.out("unexpected: \(u)\n") }
        return false
    }
}

struct Plug: Sendable {
    var hardwareID: String
    var flags: [String]
    var shouldPass: Bool
    var what: String
}

/// The demo's operator: plugs simulated devices into free fixtures (a keyline-devsim on a pseudo-terminal, linked
/// at the fixture's path) and takes each off when the console shows its outcome.
final class Line: @unchecked Sendable {
    let plan: [Plug]
    let fixtures: [String]
    let fixtureDir: String
    let devsim: String
    let devicesDir: String
    let daemon: LineDaemon
    let lock = NSLock()
    var next = 0
    var done = 0
    var plugged: [String: (process: Process, plug: Plug)] = [:]
    /// Each device's outcome by hardware id (a device that never identified itself has none in its report).
    var outcomes: [String: DeviceReport] = [:]

    init(plan: [Plug], fixtures: [String], fixtureDir: String, devsim: String, devicesDir: String, daemon: LineDaemon) {
        self.plan = plan
        self.fixtures = fixtures
        self.fixtureDir = fixtureDir
        self.devsim = devsim
        self.devicesDir = devicesDir
        self.daemon = daemon
    }

    func start() throws {
        for f in fixtures { try plugNext(into: f) }
    }

    /// Starts the next planned device on `fixture`: a devsim on a new pseudo-terminal, linked at the fixture path.
    func plugNext(into fixture: String) throws {
        lock.lock()
        guard next < plan.count else {
            lock.unlock()
            return
        }
        let p = plan[next]
        next += 1
        lock.unlock()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: devsim)
        process.arguments = ["--hardware-id", p.hardwareID, "--dir", devicesDir, "--pty"] + p.flags
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        var line: [UInt8] = []
        let fd = out.fileHandleForReading.fileDescriptor
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1 && byte != 0x0A { line.append(byte) }
        let pts = String(decoding: line, as: UTF8.self)
        let link = "\(fixtureDir)/\(fixture)"
        let tmp = link + ".new"
        unlink(tmp)
        symlink(pts, tmp)
        rename(tmp, link)
        lock.lock()
        plugged[fixture] = (process, p)
        lock.unlock()
    }

    @discardableResult
    func unplug(_ fixture: String) -> Plug? {
        lock.lock()
        let entry = plugged.removeValue(forKey: fixture)
        lock.unlock()
        let process = entry?.process
        unlink("\(fixtureDir)/\(fixture)")
        if let process, process.isRunning {
            // Pulled off the fixture: a hard stop. (SIGTERM would not do: the daemon's service group blocks it for
            // its own handling, and children inherit the blocked mask.)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        return entry?.plug
    }

    func unplugAll() { fixtures.forEach { unplug($0) } }

    /// The console showed a device's outcome: take it off, plug the next, stop the daemon after the last.
    func finished(_ report: DeviceReport) {
        let plug = unplug(report.fixture)
        try? plugNext(into: report.fixture)
        lock.lock()
        if let plug { outcomes[plug.hardwareID] = report }
        done += 1
        let all = done >= plan.count
        lock.unlock()
        if all {
            let daemon = daemon
            Task { await daemon.shutdown() }
        }
    }
}
