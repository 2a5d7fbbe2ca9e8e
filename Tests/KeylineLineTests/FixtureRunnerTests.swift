import Foundation
import Testing

@testable import KeylineCore
@testable import KeylineDeviceSim
@testable import KeylineLine
@testable import KeylineStation

#if canImport(Glibc)
    import Glibc
#endif

/// A simulated device listening on a Unix socket, served by a thread (the real byte path the daemon meets).
final class SocketDevice: @unchecked Sendable {
    let path: String
    let device: SimulatedDevice
    let server: Int32

    init(path: String, device: SimulatedDevice) throws {
        self.path = path
        self.device = device
        server = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in path.utf8.enumerated() { raw[i] = b }
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(server, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(ok == 0 && listen(server, 1) == 0)
        Thread { [self] in self.serveOne() }.start()
    }

    func serveOne() {
        let fd = accept(server, nil, nil)
        guard fd >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            var cut = false
            for o in device.receive(Array(buffer[0..<n])) {
                if case .send(let bytes) = o { _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
                if case .disconnect = o { cut = true }
            }
            if cut { break }
        }
        close(fd)
    }
}

@Suite("Fixture runner over a real socket")
struct FixtureRunnerTests {
    func run(_ behaviour: DeviceBehaviour) async throws -> (DeviceReport, LineFixture, SimulatedDevice) {
        let f = try await LineFixture()
        let path = "/tmp/kl-\(UUID().uuidString.prefix(8)).sock"
        defer { unlink(path) }
        let device = SimulatedDevice(hardwareID: "HW1", directory: "\(f.dir)/devices", behaviour: behaviour)
        let server = try SocketDevice(path: path, device: device)
        let stop = StopFlag()
        let reporter = try Reporter(stationID: f.station.config.stationID, logPath: nil, color: false) { _ in }
        reporter.onDevice = { _ in stop.raise() }
        var settings = DaemonSettings()
        settings.responseTimeout = 1
        settings.failCooldown = 0
        let runner = FixtureRunner(
            fixture: FixtureConfig(name: "fx-1", transport: .socket(address: "unix:" + path), profile: "line"),
            transport: SocketTransport(address: "unix:" + path), profile: try f.station.config.profile("line"),
            service: f.service, reporter: reporter, settings: settings, stop: stop)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread {
                runner.run()
                done.resume()
            }.start()
        }
        close(server.server)
        return (try #require(reporter.devices.first), f, device)
    }

    @Test("a good device is delivered: its stored certificate is the ledger's record")
    func pass() async throws {
        let (report, f, _) = try await run(DeviceBehaviour())
        #expect(report.result == "pass" && report.cn == "SN-HW1" && report.hardwareID == "HW1")
        let record = try #require(try await f.station.ledger.record(cn: "SN-HW1"))
        #expect(record.state == .delivered)
        let stored = try #require(FileManager.default.contents(atPath: "\(f.dir)/devices/HW1/cert.pem"))
        #expect(
            try PEMBlocks.certificates(in: Array(stored)).first.map(Hex.sha256) == record.content.certificateFingerprint
        )
    }

    @Test("a wrong read-back fails the record with the reason")
    func wrongReadback() async throws {
        var b = DeviceBehaviour()
        b.wrongReadback = true
        let (report, f, _) = try await run(b)
        #expect(report.result == "fail" && report.reason?.hasPrefix("read-back does not match") == true)
        #expect(try await f.station.ledger.record(cn: "SN-HW1")?.state == .failed)
    }

    @Test("a silent device fails on its timeout, and nothing is issued")
    func silent() async throws {
        var b = DeviceBehaviour()
        b.silent = true
        let (report, f, _) = try await run(b)
        #expect(report.result == "fail" && report.reason?.hasPrefix("no answer from the device") == true)
        #expect(try await f.station.ledger.count() == 0)
    }
}
