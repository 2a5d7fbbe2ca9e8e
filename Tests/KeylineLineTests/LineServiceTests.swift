import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

@testable import KeylineCore
@testable import KeylineDeviceSim
@testable import KeylineLedger
@testable import KeylineLine
@testable import KeylineStation

/// A station with a `line` profile (extra keys appended) and its line service; alarms are collected.
final class LineFixture: @unchecked Sendable {
    let dir: String
    let station: Station
    let service: LineService
    let lock = NSLock()
    var alarms: [String] = []
    let clock: Clock

    final class Clock: @unchecked Sendable {
        let lock = NSLock()
        var now = Date()
        func advance(_ s: Double) {
            lock.lock()
            now += s
            lock.unlock()
        }
        func read() -> Date {
            lock.lock()
            defer { lock.unlock() }
            return now
        }
    }

    init(profile extra: String = "", daemon: String = "") async throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("keyline-line-\(UUID().uuidString)").path
        _ = try await StationSetup.initialize(directory: dir)
        let toml = """

            [profiles.line]
            ca = "dev"
            cn_pattern = '^SN-[A-Z0-9-]+$'
            cn_template = "SN-{hardware_id}"
            \(extra)
            \(daemon.isEmpty ? "" : "[daemon]\n" + daemon)
            """
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: "\(dir)/station.toml"))
        h.seekToEndOfFile()
        h.write(Data(toml.utf8))
        try h.close()
        station = try await Station.open(directory: dir)
        let issuer = try await station.issuer(
            profile: "line", passphraseFile: nil, operatorName: "tester", credentialsDirectory: nil)
        let clock = Clock()
        self.clock = clock
        let box = ResultBox<LineFixture>()  // the alarm closure reaches the fixture once it exists
        service = LineService(
            station: station, issuers: ["line": issuer],
            journal: try InflightJournal(directory: "\(dir)/run/inflight"), now: { clock.read() }
        ) { text in box.value?.noteAlarm(text) }
        box.value = self
    }

    func noteAlarm(_ text: String) {
        lock.lock()
        alarms.append(text)
        lock.unlock()
    }

    func request(
        _ hw: String, key: P256.Signing.PrivateKey?, held: String? = nil, fixture: String = "fx-1"
    )
        throws -> DeviceRequest
    {
        let cn = "SN-\(hw)"
        var csr: [UInt8]?
        if let key {
            let req = try CertificateSigningRequest(
                version: .v1, subject: try DistinguishedName { CommonName(cn) },
                privateKey: Certificate.PrivateKey(key), attributes: .init())
            csr = Array(try req.serializeAsPEM().pemString.utf8)
        }
        return DeviceRequest(fixture: fixture, profile: "line", cn: cn, hardwareID: hw, csrPEM: csr, held: held)
    }

    func issued(_ r: LineService.IssueResult) -> DeviceSession.Issued? {
        if case .issued(let i, _) = r { return i }
        return nil
    }

    func refusal(_ r: LineService.IssueResult) -> String? {
        if case .refused(let why) = r { return why }
        return nil
    }
}

@Suite("Line service: idempotent re-delivery, re-issue, rate limits, work orders, recovery")
struct LineServiceTests {
    @Test("a device that returns with the same hardware id and key gets the same certificate, never a second")
    func sameKeySameCertificate() async throws {
        let f = try await LineFixture()
        let key = P256.Signing.PrivateKey()
        let first = try #require(f.issued(await f.service.issue(try f.request("HW1", key: key))))
        let again = try #require(f.issued(await f.service.issue(try f.request("HW1", key: key))))
        #expect(again.seq == first.seq)
        #expect(again.certificateSHA256 == first.certificateSHA256)
        #expect(try await f.station.ledger.count() == 1)
        // It is delivered once confirmed, and confirming it again only adds an event.
        try await f.service.delivered(seq: first.seq, fixture: "fx-1", hardwareID: "HW1")
        try await f.service.delivered(seq: first.seq, fixture: "fx-1", hardwareID: "HW1")
        #expect(try await f.station.ledger.record(seq: first.seq)?.state == .delivered)
        let kinds = try await f.station.ledger.events(recordSeq: first.seq, limit: nil).map(\.content.kind)
        #expect(kinds == [.issued, .delivered, .delivered])
    }

    @Test(
        "a known CN with another key is refused (unique-cn) unless the profile allows re-issue; the refusal is an event"
    )
    func newKeyRefused() async throws {
        let f = try await LineFixture()
        _ = try #require(f.issued(await f.service.issue(try f.request("HW1", key: P256.Signing.PrivateKey()))))
        let why = try #require(f.refusal(await f.service.issue(try f.request("HW1", key: P256.Signing.PrivateKey()))))
        #expect(why.hasPrefix("unique-cn:") && why.contains("allow_reissue"))
        #expect(try await f.station.ledger.count() == 1)
        let refused = try await f.station.ledger.events(recordSeq: nil, limit: nil).filter {
            $0.content.kind == .refused
        }
        #expect(refused.count == 1 && refused[0].content.cn == "SN-HW1")
    }

    @Test("with allow_reissue a new key revokes the old certificate (superseded) and issues one that names it")
    func reissueAllowed() async throws {
        let f = try await LineFixture(profile: "allow_reissue = true")
        let first = try #require(f.issued(await f.service.issue(try f.request("HW1", key: P256.Signing.PrivateKey()))))
        let second = try #require(f.issued(await f.service.issue(try f.request("HW1", key: P256.Signing.PrivateKey()))))
        #expect(second.seq != first.seq)
        let history = try await f.station.ledger.history(cn: "SN-HW1")
        #expect(history.map(\.state) == [.revoked, .issued])
        #expect(history[1].content.reissueOf == first.seq)
        let revokeEvent = try await f.station.ledger.events(recordSeq: first.seq, limit: nil).last
        #expect(revokeEvent?.content.kind == .revoked && revokeEvent?.content.detail.contains("superseded") == true)
    }

    @Test("a CN issued to another hardware id is refused")
    func otherHardwareRefused() async throws {
        let f = try await LineFixture()
        _ = try #require(f.issued(await f.service.issue(try f.request("HW1", key: P256.Signing.PrivateKey()))))
        var r = try f.request("HW2", key: nil)
        r.cn = "SN-HW1"
        let why = try #require(f.refusal(await f.service.issue(r)))
        #expect(why.contains("was issued to hardware id 'HW1'"))
    }

    @Test("the CN from the template must still match the profile's cn_pattern, and a CSR must name that CN")
    func cnChecks() async throws {
        let f = try await LineFixture()
        var r = try f.request("hw-lower", key: nil)
        #expect(try #require(f.refusal(await f.service.issue(r))).hasPrefix("cn-pattern"))
        r = try f.request("HW3", key: P256.Signing.PrivateKey())
        r.cn = "SN-HW4"
        #expect(try #require(f.refusal(await f.service.issue(r))).hasPrefix("csr-cn"))
        #expect(try await f.station.ledger.count() == 0)
    }

    @Test("a station-made key: the device that holds its certificate is confirmed, one that lost it is refused")
    func stationKey() async throws {
        let f = try await LineFixture()
        let first = try #require(f.issued(await f.service.issue(try f.request("HW1", key: nil))))
        #expect(first.stationMadeKey)
        let pem = String(decoding: first.payload, as: UTF8.self)
        #expect(pem.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        #expect(pem.components(separatedBy: "BEGIN CERTIFICATE").count - 1 == 3, "leaf, issuing CA, root")
        let held = await f.service.issue(try f.request("HW1", key: nil, held: first.certificateSHA256))
        #expect(held == .alreadyHeld(seq: first.seq))
        let lost = try #require(f.refusal(await f.service.issue(try f.request("HW1", key: nil, held: nil))))
        #expect(lost.contains("station-made key is not on the device"))
        #expect(try await f.station.ledger.count() == 1)
    }

    @Test("token bucket: a burst, then refusals with the wait, then refilled by time")
    func tokenBucket() {
        var b = TokenBucket(perMinute: 60, burst: 2)
        let t0 = Date()
        let takes = [b.take(at: t0), b.take(at: t0), b.take(at: t0), b.take(at: t0 + 1.01), b.take(at: t0 + 1.02)]
        #expect(takes[0] == nil && takes[1] == nil, "the burst")
        #expect(takes[2].map { abs($0 - 1) < 0.01 } == true, "refused, with a second to wait")
        #expect(takes[3] == nil, "one token back after a second")
        #expect(takes[4] != nil)
        #expect(TokenBucket(perMinute: 600, burst: nil).capacity == 100)
    }

    @Test("rate limits refuse a storm with a clear reason and raise one alarm when refusals spike")
    func rateLimit() async throws {
        let f = try await LineFixture(
            profile: "rate_per_minute = 60\nrate_burst = 2", daemon: "alarm_refusals = 3\nalarm_window = 60\n")
        for i in 0..<2 { #expect(f.issued(await f.service.issue(try f.request("R\(i)", key: nil))) != nil) }
        for i in 2..<6 {
            let why = try #require(f.refusal(await f.service.issue(try f.request("R\(i)", key: nil))))
            #expect(why.hasPrefix("rate-limit:") && why.contains("profile 'line'"))
        }
        #expect(f.alarms.count == 1, "one alarm per window: \(f.alarms)")
        #expect(f.alarms.first?.contains("3 refusals") == true)
        f.clock.advance(1.5)
        #expect(f.issued(await f.service.issue(try f.request("R9", key: nil))) != nil, "refilled after a second")
        #expect(try await f.station.ledger.count() == 3)
    }

    @Test("a work order: certificates carry its id, none beyond its quantity, a revoked one frees its place")
    func workOrder() async throws {
        let f = try await LineFixture()
        let order = try await WorkOrders.open(
            station: f.station, id: "WO-7", profile: "line", quantity: 2, operatorName: "lead")
        #expect(order.isOpen)
        for hw in ["W1", "W2"] {
            guard case .issued(_, let wo) = await f.service.issue(try f.request(hw, key: nil)) else {
                Issue.record("expected issuance")
                return
            }
            #expect(wo == "WO-7")
        }
        let why = try #require(f.refusal(await f.service.issue(try f.request("W3", key: nil))))
        #expect(why.hasPrefix("work-order:") && why.contains("2 of 2"))
        _ = try await Revocation.revoke(
            station: f.station, cn: "SN-W1", reason: .scrap, note: nil, operatorName: "qa")
        #expect(f.issued(await f.service.issue(try f.request("W3", key: nil))) != nil)
        #expect(try await WorkOrders.issuedCount("WO-7", in: f.station.ledger) == 2)
        // Closed: the line issues without a work order again.
        _ = try await WorkOrders.close(station: f.station, id: "WO-7", operatorName: "lead")
        guard case .issued(_, let wo) = await f.service.issue(try f.request("W4", key: nil)) else {
            Issue.record("expected issuance")
            return
        }
        #expect(wo == nil)
        await #expect(throws: KeylineError.self) {
            try await WorkOrders.close(station: f.station, id: "WO-7", operatorName: "lead")
        }
        await #expect(throws: KeylineError.self) {
            try await WorkOrders.open(station: f.station, id: "WO-7", profile: "line", quantity: 1, operatorName: "x")
        }
    }

    @Test("fixtures asking at once cannot overrun a work order: the last place goes to one device")
    func workOrderConcurrent() async throws {
        let f = try await LineFixture()
        _ = try await WorkOrders.open(station: f.station, id: "WO-C", profile: "line", quantity: 3, operatorName: "x")
        let requests = try (0..<8).map { try f.request("C\($0)", key: nil, fixture: "fx-\($0)") }
        let results = await withTaskGroup(of: LineService.IssueResult.self) { group in
            for r in requests { group.addTask { await f.service.issue(r) } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.filter { f.issued($0) != nil }.count == 3)
        #expect(results.compactMap { f.refusal($0) }.filter { $0.hasPrefix("work-order:") }.count == 5)
        #expect(try await WorkOrders.issuedCount("WO-C", in: f.station.ledger) == 3)
    }

    @Test(
        "after a crash, an interrupted device's record becomes failed; when it returns it is delivered the same certificate"
    )
    func recovery() async throws {
        let f = try await LineFixture()
        let key = P256.Signing.PrivateKey()
        let first = try #require(f.issued(await f.service.issue(try f.request("HW1", key: key))))
        // The daemon died here: the journal entry is left, the record is `issued`.
        #expect(FileManager.default.fileExists(atPath: "\(f.dir)/run/inflight/fx-1.json"))
        let lines = await f.service.recoverInterrupted()
        #expect(lines.count == 1 && lines[0].contains("marked failed"))
        #expect(try await f.station.ledger.record(seq: first.seq)?.state == .failed)
        #expect(!FileManager.default.fileExists(atPath: "\(f.dir)/run/inflight/fx-1.json"))
        let again = try #require(f.issued(await f.service.issue(try f.request("HW1", key: key))))
        #expect(again.seq == first.seq && again.certificateSHA256 == first.certificateSHA256)
        try await f.service.delivered(seq: again.seq, fixture: "fx-1", hardwareID: "HW1")
        #expect(try await f.station.ledger.record(seq: first.seq)?.state == .delivered)
        #expect(await f.service.recoverInterrupted().isEmpty)
        #expect(try await f.station.ledger.verify().isIntact)
    }

    @Test("a failed delivery marks an issued record failed; a delivered one keeps its state")
    func failures() async throws {
        let f = try await LineFixture()
        let a = try #require(f.issued(await f.service.issue(try f.request("F1", key: nil))))
        await f.service.failed(seq: a.seq, fixture: "fx-1", reason: "read-back does not match")
        let record = try await f.station.ledger.record(seq: a.seq)
        #expect(record?.state == .failed)
        let last = try await f.station.ledger.events(recordSeq: a.seq, limit: nil).last
        #expect(last?.content.detail == "fixture fx-1: read-back does not match")
    }
}
