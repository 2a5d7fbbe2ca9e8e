import Foundation
import KeylineCore
import KeylineStation

/// A flag set once from any thread (graceful shutdown).
public final class StopFlag: @unchecked Sendable {
    let lock = NSLock()
    var set = false

    public init() {}

    public var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return set
    }

    public func raise() {
        lock.lock()
        set = true
        lock.unlock()
    }
}

/// Runs `body` (async) from a plain thread and waits for its result. Fixture threads use it to reach the line
/// service without ever blocking the async pool themselves.
final class ResultBox<T>: @unchecked Sendable {
    var value: T?
    init() {}
}

func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        box.value = await body()
        done.signal()
    }
    done.wait()
    return box.value!
}

/// One fixture: waits for a device, runs its session (``DeviceSession``) to PASS or FAIL, waits for it to be
/// taken off, and again, until asked to stop. Runs on its own thread; blocking I/O stays there.
public final class FixtureRunner: @unchecked Sendable {
    public let fixture: FixtureConfig
    let transport: DeviceTransport
    let session: DeviceSession.Config
    let service: LineService
    let reporter: Reporter
    let settings: DaemonSettings
    let stop: StopFlag
    /// How often an empty fixture is looked at again.
    var pollInterval = 0.2

    public init(
        fixture: FixtureConfig, transport: DeviceTransport, profile: Profile, service: LineService,
        reporter: Reporter, settings: DaemonSettings, stop: StopFlag
    ) {
        self.fixture = fixture
        self.transport = transport
        self.service = service
        self.reporter = reporter
        self.settings = settings
        self.stop = stop
        let line = profile.line
        var c = DeviceSession.Config(
            cnForHardwareID: { line.cn(forHardwareID: $0) }, acceptDeviceCN: line.acceptDeviceCN)
        c.responseTimeout = settings.responseTimeout
        c.csrTimeout = settings.csrTimeout
        c.storeTimeout = settings.storeTimeout
        c.maxRetries = settings.retries
        c.lock = settings.lock
        self.session = c
    }

    /// The loop; returns when `stop` is raised and no device is in flight.
    public func run() {
        var lastProblem: String?
        while !stop.isSet {
            let link: DeviceLink?
            do {
                link = try transport.open()
                if lastProblem != nil {
                    reporter.note("fixture-ok", fixture: fixture.name, "\(transport.description) is usable again")
                    lastProblem = nil
                }
            } catch {
                let text = "\(error)"
                if text != lastProblem {
                    reporter.alarm("fixture \(fixture.name): \(text)")
                    lastProblem = text
                }
                sleep(seconds: 1)
                continue
            }
            guard let link else {
                sleep(seconds: pollInterval)
                continue
            }
            let report = runDevice(link)
            if report.hardwareID == nil && report.reason == "the device disconnected" {
                // Closed before anything identified itself: a connection that came and went (a fixture
                // re-seated, a simulator restarting), not a device to pass or fail.
                reporter.note("link-closed", fixture: fixture.name, "the link closed before a device identified itself")
                waitUntilRemoved(link, hardwareID: nil)
                link.close()
                continue
            }
            reporter.device(report)
            if !report.passed && settings.failCooldown > 0 { sleep(seconds: settings.failCooldown) }
            waitUntilRemoved(link, hardwareID: report.hardwareID)
            link.close()
        }
    }

    func sleep(seconds: Double) { usleep(useconds_t(max(0, seconds) * 1_000_000)) }

    /// After a device finished, it stays on the fixture until the operator takes it off: the same device is not
    /// provisioned again in a loop. Taken off is: the link closes (a CDC-ACM tty or a USB device disappears, a
    /// socket ends), or, for a fixture whose USB-serial adapter stays plugged in, another device answers. To hear
    /// that, the station sends IDENTIFY about once a second: the same hardware id means the device is still there,
    /// silence means nothing is (or the same silent device), any other well-formed answer means a new device (one
    /// that was not greeted answers `ERR STATE`).
    func waitUntilRemoved(_ link: DeviceLink, hardwareID: String?) {
        var decoder = DeviceProtocol.Decoder()
        var nextProbe = Date().addingTimeInterval(1)
        while !stop.isSet {
            if hardwareID != nil && Date() >= nextProbe {
                nextProbe = Date().addingTimeInterval(1)
                do { try link.write(Array("IDENTIFY\n".utf8)) } catch { return }
            }
            switch link.read(timeout: 0.25) {
            case .closed: return
            case .timeout: continue
            case .data(let bytes):
                for case .success(let frame) in decoder.feed(bytes) {
                    let same = frame.words.prefix(2) == ["OK", "IDENTIFY"] && frame.fields["hw"] == hardwareID
                    if !same && hardwareID != nil { return }
                }
            }
        }
    }

    /// One device's whole exchange, every action of the session performed here.
    func runDevice(_ link: DeviceLink) -> DeviceReport {
        let started = Date()
        var machine = DeviceSession(config: session)
        var decoder = DeviceProtocol.Decoder()
        var queue = machine.handle(.start)
        var deadline = Date()
        var workOrder: String?
        var seqInFlight: Int64?
        var waited = 0.0  // seconds spent waiting for the device's answers
        let fixtureName = fixture.name
        let service = service

        func report(_ outcome: DeviceSession.Outcome) -> DeviceReport {
            var r = DeviceReport(
                at: Date(), fixture: fixtureName, result: "pass", cn: machine.cn, hardwareID: machine.hardwareID,
                seq: nil, seconds: Date().timeIntervalSince(started), reason: nil, profile: fixture.profile,
                workOrder: workOrder, stationID: service.station.config.stationID)
            r.stationSeconds = max(0, r.seconds - waited)
            switch outcome {
            case .pass(let cn, let seq):
                r.cn = cn
                r.seq = seq
            case .fail(let cn, let seq, let reason):
                r.result = "fail"
                r.cn = cn ?? machine.cn
                r.seq = seq
                r.reason = reason
            }
            return r
        }

        while true {
            while !queue.isEmpty {
                let action = queue.removeFirst()
                switch action {
                case .send(let frame, let timeout):
                    do {
                        try link.write(frame.encoded)
                        deadline = Date().addingTimeInterval(timeout)
                    } catch {
                        queue += machine.handle(.disconnected)
                    }
                case .issue(let cn, let hw, let csrPEM, let held):
                    let request = DeviceRequest(
                        fixture: fixtureName, profile: fixture.profile, cn: cn, hardwareID: hw, csrPEM: csrPEM,
                        held: held)
                    let result = blocking { await service.issue(request) }
                    switch result {
                    case .issued(let issued, let wo):
                        workOrder = wo
                        seqInFlight = issued.seq
                        queue += machine.handle(.issued(issued))
                    case .alreadyHeld(let seq):
                        seqInFlight = seq
                        queue += machine.handle(.alreadyHeld(seq: seq))
                    case .refused(let reason):
                        queue += machine.handle(.issueRefused(reason))
                    }
                case .markDelivered(let seq):
                    let hw = machine.hardwareID ?? "?"
                    let error: String? = blocking {
                        do {
                            try await service.delivered(seq: seq, fixture: fixtureName, hardwareID: hw)
                            return nil
                        } catch {
                            return "\(error)"
                        }
                    }
                    if let error {
                        // The device holds a committed certificate, but its confirmation is not recorded.
                        return report(
                            .fail(cn: machine.cn, seq: seq, reason: "ledger: cannot record delivery: \(error)"))
                    }
                case .finish(let outcome):
                    if case .fail(_, let seq, let reason) = outcome {
                        let failedSeq = seq ?? seqInFlight
                        blocking { await service.failed(seq: failedSeq, fixture: fixtureName, reason: reason) }
                    } else {
                        blocking { await service.finishedWithoutRecord(fixture: fixtureName) }
                    }
                    return report(outcome)
                }
            }
            // Wait for the device's answer until the request's deadline.
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else {
                queue += machine.handle(.timeout)
                continue
            }
            let waitStart = Date()
            let read = link.read(timeout: remaining)
            waited += Date().timeIntervalSince(waitStart)
            switch read {
            case .timeout:
                queue += machine.handle(.timeout)
            case .closed:
                queue += machine.handle(.disconnected)
            case .data(let bytes):
                for result in decoder.feed(bytes) {
                    switch result {
                    case .success(let frame): queue += machine.handle(.frame(frame))
                    case .failure(let error): queue += machine.handle(.decodeError(error))
                    }
                }
            }
        }
    }
}
