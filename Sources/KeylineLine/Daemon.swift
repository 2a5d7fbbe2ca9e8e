import Foundation
import KeylineCore
import KeylineLedger
import KeylineStation
import Logging
import ServiceLifecycle

/// The fixtures as one service of the group: each runner on a thread of its own. Graceful shutdown raises the
/// shared stop flag, so every fixture at once stops accepting devices, and returns when the devices in flight
/// have finished.
struct FixturesService: Service, CustomStringConvertible {
    let runners: [FixtureRunner]
    let stop: StopFlag
    /// Called once the service runs: the group traps SIGTERM and SIGINT before it starts services, so whoever
    /// waits for this announcement may stop the daemon gracefully from then on.
    let started: @Sendable () -> Void

    var description: String { "fixtures \(runners.map(\.fixture.name).joined(separator: ", "))" }

    func run() async throws {
        let runners = runners
        started()
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                for runner in runners {
                    group.addTask {
                        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                            let thread = Thread {
                                runner.run()
                                done.resume()
                            }
                            thread.name = "keyline-fixture-\(runner.fixture.name)"
                            thread.start()
                        }
                    }
                }
            }
        } onGracefulShutdown: { [stop] in
            stop.raise()
        }
    }
}

/// `keyline run`: the station's daemon. One service per fixture in a service group that stops gracefully on
/// SIGTERM or SIGINT; one ``LineService`` shared by all of them.
public final class LineDaemon: @unchecked Sendable {
    public let station: Station
    public let fixtures: [FixtureConfig]
    public let reporter: Reporter
    public let service: LineService
    let stop = StopFlag()
    let runners: [FixtureRunner]
    let usb: [USBTransport]
    let lockFD: Int32
    var group: ServiceGroup?
    let operatorName: String

    /// Opens everything the daemon needs before the first device: the run lock (one daemon per station), the
    /// issuer of every profile a fixture uses (the CA key is opened once, here), the journal of devices in flight.
    /// `transports` replaces how a fixture is reached (the demo passes its own pseudo-terminals).
    public init(
        station: Station, fixtures: [FixtureConfig], reporter: Reporter, passphraseFile: String?,
        operatorName: String, credentialsDirectory: String?
    ) async throws {
        guard !fixtures.isEmpty else {
            throw KeylineError(
                .configuration,
                "no fixtures: add a [fixtures.NAME] section to \(StationConfig.fileName) (see Station/station.example.toml)"
            )
        }
        self.station = station
        self.fixtures = fixtures
        self.reporter = reporter
        self.operatorName = operatorName
        let runDir = "\(station.config.directory)/run"
        try FileManager.default.createDirectory(atPath: runDir, withIntermediateDirectories: true)
        lockFD = open("\(runDir)/keyline-run.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else {
            throw KeylineError(.ioError, "cannot open \(runDir)/keyline-run.lock: \(String(cString: strerror(errno)))")
        }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            close(lockFD)
            throw KeylineError(
                .unavailable, "another 'keyline run' is already running for the station at \(station.config.directory)")
        }
        var issuers: [String: Issuer] = [:]
        for name in Set(fixtures.map(\.profile)).sorted() {
            issuers[name] = try await station.issuer(
                profile: name, passphraseFile: passphraseFile, operatorName: operatorName,
                credentialsDirectory: credentialsDirectory)
        }
        let journal = try InflightJournal(directory: "\(runDir)/inflight")
        service = LineService(station: station, issuers: issuers, journal: journal) { [reporter] text in
            reporter.alarm(text)
        }
        var runners: [FixtureRunner] = []
        var usb: [USBTransport] = []
        for f in fixtures {
            let transport: DeviceTransport
            switch f.transport {
            case .tty(let path, let baud): transport = TTYTransport(path: path, baud: baud)
            case .socket(let address): transport = SocketTransport(address: address)
            case .usb(let v, let p, let i):
                let t = try USBTransport(vendorID: v, productID: p, interface: i)
                t.log = { [reporter] text in reporter.note("usb", fixture: f.name, text) }
                usb.append(t)
                transport = t
            }
            runners.append(
                FixtureRunner(
                    fixture: f, transport: transport, profile: issuers[f.profile]!.profile, service: service,
                    reporter: reporter, settings: station.config.daemon, stop: stop))
        }
        self.runners = runners
        self.usb = usb
    }

    deinit { close(lockFD) }

    /// Runs until SIGTERM/SIGINT (or ``shutdown()``), then waits for the devices in flight.
    public func run() async throws {
        for line in await service.recoverInterrupted() { reporter.note("recovered", line) }
        let names = fixtures.map { "\($0.name) (\($0.transport), profile \($0.profile))" }.joined(separator: ", ")
        _ = try? await station.ledger.appendEvent(
            EventContent(
                kind: .daemonStarted, recordSeq: nil, cn: nil, detail: "fixtures: \(names)",
                stationID: station.config.stationID, operatorName: operatorName, at: Date()))
        let announcement =
            "station \(station.config.stationID): \(fixtures.count) fixture(s): \(names); SIGTERM or Ctrl-C stops after the devices in flight"
        var logger = Logger(label: "keyline.run")
        logger.logLevel = .warning
        let fixturesService = ServiceGroupConfiguration.ServiceConfiguration(
            service: FixturesService(runners: runners, stop: stop) { [reporter] in
                reporter.note("started", announcement)
            },
            successTerminationBehavior: .gracefullyShutdownGroup,
            failureTerminationBehavior: .gracefullyShutdownGroup, serviceName: "fixtures")
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [fixturesService], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        setGroup(group)
        try await group.run()
        usb.forEach { $0.shutdown() }
        let pass = reporter.passCount
        let fail = reporter.failCount
        _ = try? await station.ledger.appendEvent(
            EventContent(
                kind: .daemonStopped, recordSeq: nil, cn: nil, detail: "\(pass) passed, \(fail) failed",
                stationID: station.config.stationID, operatorName: operatorName, at: Date()))
        reporter.note("stopped", "stopped: \(pass) passed, \(fail) failed")
    }

    let groupLock = NSLock()
    func currentGroup() -> ServiceGroup? {
        groupLock.lock()
        defer { groupLock.unlock() }
        return group
    }

    func setGroup(_ g: ServiceGroup) {
        groupLock.lock()
        group = g
        groupLock.unlock()
    }

    /// Asks the daemon to stop as SIGTERM would: devices in flight finish, no new one is accepted.
    public func shutdown() async {
        await currentGroup()?.triggerGracefulShutdown()
    }
}
