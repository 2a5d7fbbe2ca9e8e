import Crypto
import Foundation
import KeylineCore
import KeylineLedger
import KeylineStation
import SwiftASN1
import X509

/// A token bucket: `capacity` at once, refilled at `perSecond`. Pure, with the clock passed in.
public struct TokenBucket: Sendable {
    public let capacity: Double
    public let perSecond: Double
    var tokens: Double
    var last: Date?

    public init(perMinute: Double, burst: Int?) {
        perSecond = perMinute / 60
        capacity = Double(burst ?? max(1, Int((perMinute / 6).rounded(.up))))
        tokens = capacity
    }

    /// Takes a token at `now`; nil when one was available, else the seconds until the next.
    public mutating func take(at now: Date) -> Double? {
        if let last { tokens = min(capacity, tokens + now.timeIntervalSince(last) * perSecond) }
        last = now
        if tokens >= 1 {
            tokens -= 1
            return nil
        }
        return (1 - tokens) / perSecond
    }
}

/// What the daemon asks of the station for one device on a fixture.
public struct DeviceRequest: Sendable {
    public var fixture: String
    public var profile: String
    public var cn: String
    public var hardwareID: String
    /// The device's CSR; nil when the station makes the key.
    public var csrPEM: [UInt8]?
    /// The certificate a device without key generation already holds (SHA-256), if any.
    public var held: String?

    public init(fixture: String, profile: String, cn: String, hardwareID: String, csrPEM: [UInt8]?, held: String?) {
        self.fixture = fixture
        self.profile = profile
        self.cn = cn
        self.hardwareID = hardwareID
        self.csrPEM = csrPEM
        self.held = held
    }
}

/// The station's side of the line: policy, rate limits, work orders and idempotent re-delivery, then reserve →
/// sign → commit through the ledger. One actor serves every fixture and lets one device at a time through
/// issuance, so a work order's count and the rate limits hold across them.
public actor LineService {
    public enum IssueResult: Sendable, Equatable {
        case issued(DeviceSession.Issued, workOrder: String?)
        case alreadyHeld(seq: Int64)
        case refused(String)
    }

    public let station: Station
    let issuers: [String: Issuer]
    let settings: DaemonSettings
    let journal: InflightJournal
    var stationBucket: TokenBucket?
    var profileBuckets: [String: TokenBucket] = [:]
    var refusals: [Date] = []
    /// Work orders, refreshed from the events appended since the last device.
    var workOrders = WorkOrderBook()
    /// Each profile's CA chain as PEM, sent after every certificate (made once).
    var chains: [String: String] = [:]
    var lastAlarm: Date?
    let now: @Sendable () -> Date
    /// Called with the text of an ALARM line when refusals spike.
    let alarm: @Sendable (String) -> Void

    public init(
        station: Station, issuers: [String: Issuer], journal: InflightJournal,
        now: @escaping @Sendable () -> Date = { Date() }, alarm: @escaping @Sendable (String) -> Void
    ) {
        self.station = station
        self.issuers = issuers
        self.settings = station.config.daemon
        self.journal = journal
        self.now = now
        self.alarm = alarm
        if let r = settings.ratePerMinute { stationBucket = TokenBucket(perMinute: r, burst: settings.rateBurst) }
        for (name, issuer) in issuers {
            if let r = issuer.profile.line.ratePerMinute {
                profileBuckets[name] = TokenBucket(perMinute: r, burst: issuer.profile.line.rateBurst)
            }
        }
    }

    var ledger: any Ledger { station.ledger }

    /// Who the daemon's events name: the operator every issuer was opened with.
    var operatorName: String { issuers.values.first?.operatorName ?? "keyline" }

    var issuing = false
    var waiting: [CheckedContinuation<Void, Never>] = []

    func enter() async {
        guard issuing else {
            issuing = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func leave() {
        if waiting.isEmpty { issuing = false } else { waiting.removeFirst().resume() }
    }

    /// Issues (or finds again) the certificate for one device. Every refusal leaves a `refused` event and counts
    /// toward the alarm.
    public func issue(_ r: DeviceRequest) async -> IssueResult {
        guard let issuer = issuers[r.profile] else { return .refused("no issuer for profile '\(r.profile)'") }
        // One device at a time from check to commit: the actor alone would interleave two fixtures at every await,
        // and both could take a work order's last place.
        await enter()
        defer { leave() }
        do {
            return try await issue(r, issuer)
        } catch let e as KeylineError {
            noteRefusal(e.reason)
            return .refused(e.reason)
        } catch {
            noteRefusal("\(error)")
            return .refused("unexpected error: \(error)")
        }
    }

    func issue(_ r: DeviceRequest, _ issuer: Issuer) async throws -> IssueResult {
        let line = issuer.profile.line
        // The key: the device's CSR (checked by the profile), or one the station makes after every check passed.
        var publicKey: Certificate.PublicKey?
        if let pem = r.csrPEM {
            let csr: CSRInput
            do { csr = try CSRInput(bytes: pem) } catch let e as KeylineError { try await issuer.refuse(e, cn: r.cn) }
            switch issuer.policy.evaluate(csr) {
            case .success(let accepted):
                guard accepted.cn == r.cn else {
                    try await issuer.refuse(
                        .refused(
                            "csr-cn", "the device's CSR names CN '\(accepted.cn)', the station asked for '\(r.cn)'"),
                        cn: r.cn)
                }
                publicKey = accepted.publicKey
            case .failure(let e): try await issuer.refuse(e, cn: r.cn)
            }
        } else {
            try await issuer.checkCN(r.cn)
            if case .refuse(let rule, let reason) = issuer.policy.checkKey(.ecP256) {
                try await issuer.refuse(.refused(rule, reason), cn: r.cn)
            }
        }

        // The open work order for this profile, if any, and its quantity (checked before anything is revoked).
        var book = workOrders
        try await book.refresh(from: ledger)
        workOrders = book
        let order = book.open(for: r.profile)
        func checkWorkOrder() async throws {
            guard let order else { return }
            let count = try await WorkOrders.issuedCount(order.id, in: ledger)
            guard count < order.quantity else {
                try await issuer.refuse(
                    .refused(
                        "work-order",
                        "work order '\(order.id)' is complete (\(count) of \(order.quantity) issued); open the next with 'keyline workorder open --profile \(r.profile) --quantity N'"
                    ), cn: r.cn)
            }
        }

        var reissue = false
        if let latest = try await ledger.record(cn: r.cn) {
            if latest.state != .revoked {
                guard latest.content.hardwareID == r.hardwareID else {
                    try await issuer.refuse(
                        .refused(
                            "unique-cn",
                            "CN '\(r.cn)' was issued to hardware id '\(latest.content.hardwareID ?? "none")' (ledger seq \(latest.seq)), not to '\(r.hardwareID)'"
                        ), cn: r.cn)
                }
                if let publicKey,
                    latest.content.publicKeySHA256 == CertificateFactory.publicKeyFingerprint(publicKey)
                {
                    // The same device with the same key (a brown-out, a re-seat): the same certificate again.
                    return .issued(try redeliver(latest, issuer), workOrder: latest.content.workOrder)
                }
                if publicKey == nil, let held = r.held, held == latest.content.certificateFingerprint {
                    return .alreadyHeld(seq: latest.seq)
                }
                guard line.allowReissue else {
                    let what =
                        publicKey == nil ? "its station-made key is not on the device" : "it came with another key"
                    try await issuer.refuse(
                        .refused(
                            "unique-cn",
                            "CN '\(r.cn)' was already issued (ledger seq \(latest.seq), \(latest.state.rawValue)) and \(what); to give it a new certificate set allow_reissue = true in [profiles.\(r.profile)] (the old one is then revoked as superseded)"
                        ), cn: r.cn)
                }
                // The old certificate leaves the work order as the new one joins it: only a move between work
                // orders needs a free place.
                if latest.content.workOrder != order?.id { try await checkWorkOrder() }
                if let e = takeTokens(r, issuer) { try await issuer.refuse(e, cn: r.cn) }
                _ = try await Revocation.revoke(
                    station: station, cn: r.cn, reason: .superseded,
                    note: "hardware id \(r.hardwareID.prefix(64)) returned on fixture \(r.fixture) with a new key",
                    operatorName: issuer.operatorName, at: now())
                reissue = true
            } else {
                guard line.allowReissue else {
                    try await issuer.refuse(
                        .refused(
                            "unique-cn",
                            "CN '\(r.cn)' was revoked (ledger seq \(latest.seq)); set allow_reissue = true in [profiles.\(r.profile)] to issue a reworked device again"
                        ), cn: r.cn)
                }
                try await checkWorkOrder()
                if let e = takeTokens(r, issuer) { try await issuer.refuse(e, cn: r.cn) }
                reissue = true
            }
        } else {
            try await checkWorkOrder()
            if let e = takeTokens(r, issuer) { try await issuer.refuse(e, cn: r.cn) }
        }

        var keyPEM = ""
        if publicKey == nil {
            let key = DeviceKeys.p256()
            keyPEM = key.pemRepresentation + "\n"
            publicKey = Certificate.PublicKey(key.publicKey)
        }
        // Written before the ledger can hold an `issued` record for this device, removed when it finishes: a
        // restart after a crash finds it and fails the record cleanly.
        try journal.begin(fixture: r.fixture, cn: r.cn, hardwareID: r.hardwareID, at: now())
        let issued = try await issuer.issue(
            cn: r.cn, publicKey: publicKey!, origin: r.csrPEM == nil ? .station : .device, hardwareID: r.hardwareID,
            workOrder: order?.id, reissue: reissue)
        let payload = Array((keyPEM + issued.pem + (try chain(issuer))).utf8)
        return .issued(
            DeviceSession.Issued(
                seq: issued.record.seq, certificateSHA256: issued.record.content.certificateFingerprint,
                publicKeySHA256: issued.record.content.publicKeySHA256, payload: payload,
                stationMadeKey: r.csrPEM == nil), workOrder: order?.id)
    }

    /// The certificate the ledger already holds for a returning device, with its chain.
    func redeliver(_ record: LedgerRecord, _ issuer: Issuer) throws -> DeviceSession.Issued {
        let pem = PEMDocument(type: "CERTIFICATE", derBytes: record.content.certificateDER).pemString + "\n"
        return DeviceSession.Issued(
            seq: record.seq, certificateSHA256: record.content.certificateFingerprint,
            publicKeySHA256: record.content.publicKeySHA256, payload: Array((pem + (try chain(issuer))).utf8),
            stationMadeKey: false)
    }

    func chain(_ issuer: Issuer) throws -> String {
        if let known = chains[issuer.profile.name] { return known }
        let made = try issuer.chainPEM
        chains[issuer.profile.name] = made
        return made
    }

    /// Takes a token from the station's and the profile's buckets, or refuses with the time to wait.
    func takeTokens(_ r: DeviceRequest, _ issuer: Issuer) -> KeylineError? {
        let at = now()
        if var b = stationBucket {
            let wait = b.take(at: at)
            stationBucket = b
            if let wait {
                return KeylineError.refused(
                    "rate-limit",
                    String(
                        format: "the station's limit of %g certificates a minute is reached; next in %.1f s",
                        settings.ratePerMinute ?? 0, wait))
            }
        }
        if var b = profileBuckets[r.profile] {
            let wait = b.take(at: at)
            profileBuckets[r.profile] = b
            if let wait {
                return KeylineError.refused(
                    "rate-limit",
                    String(
                        format: "profile '%@' limit of %g certificates a minute is reached; next in %.1f s", r.profile,
                        issuer.profile.line.ratePerMinute ?? 0, wait))
            }
        }
        return nil
    }

    /// Counts a refusal; raises the alarm when `alarm_refusals` fall within `alarm_window` seconds (once a window).
    func noteRefusal(_ reason: String) {
        let at = now()
        refusals.append(at)
        refusals.removeAll { at.timeIntervalSince($0) > settings.alarmWindow }
        guard refusals.count >= settings.alarmRefusals else { return }
        if let lastAlarm, at.timeIntervalSince(lastAlarm) < settings.alarmWindow { return }
        lastAlarm = at
        alarm(
            "\(refusals.count) refusals in the last \(Int(settings.alarmWindow)) s; latest: \(reason)")
    }

    /// The device confirmed the certificate (the read-back matched): the record becomes `delivered`.
    public func delivered(seq: Int64, fixture: String, hardwareID: String) async throws {
        defer { journal.end(fixture: fixture) }
        let detail = "read-back matched on fixture \(fixture) (hardware id \(hardwareID))"
        guard let record = try await ledger.record(seq: seq) else { return }
        let event = EventContent(
            kind: .delivered, recordSeq: seq, cn: record.content.cn,
            detail: record.state == .delivered ? "delivered again: " + detail : detail,
            stationID: station.config.stationID, operatorName: operatorName, at: now())
        if record.state == .delivered {
            try await ledger.appendEvent(event)
        } else {
            try await ledger.transition(recordSeq: seq, to: .delivered, event: event)
        }
    }

    /// The device did not confirm: an `issued` record becomes `failed` with the reason (a delivered or revoked one
    /// keeps its state; the event says what happened).
    public func failed(seq: Int64?, fixture: String, reason: String) async {
        defer { journal.end(fixture: fixture) }
        guard let seq, let record = try? await ledger.record(seq: seq) else { return }
        let event = EventContent(
            kind: .failed, recordSeq: seq, cn: record.content.cn, detail: "fixture \(fixture): \(reason)",
            stationID: station.config.stationID, operatorName: operatorName, at: now())
        if record.state == .issued {
            _ = try? await ledger.transition(recordSeq: seq, to: .failed, event: event)
        } else if record.state != .revoked {
            _ = try? await ledger.appendEvent(event)
        }
    }

    /// A device that finished without a certificate: only the journal entry goes.
    public func finishedWithoutRecord(fixture: String) { journal.end(fixture: fixture) }

    /// After a crash: every device that was in flight is failed cleanly (its record, if one was committed, becomes
    /// `failed`; the device gets the same certificate when it is connected again). Returns one line per device.
    public func recoverInterrupted() async -> [String] {
        var lines: [String] = []
        for entry in journal.leftovers() {
            defer { journal.end(fixture: entry.fixture) }
            guard let record = try? await ledger.record(cn: entry.cn),
                record.state == .issued, record.content.hardwareID == entry.hardwareID,
                record.content.createdAt >= entry.startedAt.addingTimeInterval(-2)
            else {
                lines.append(
                    "fixture \(entry.fixture): \(entry.hardwareID) was interrupted before a certificate was committed")
                continue
            }
            let reason =
                "interrupted: the station stopped during this device's exchange; it gets the same certificate when connected again"
            _ = try? await ledger.transition(
                recordSeq: record.seq, to: .failed,
                event: EventContent(
                    kind: .failed, recordSeq: record.seq, cn: entry.cn, detail: "fixture \(entry.fixture): \(reason)",
                    stationID: station.config.stationID, operatorName: operatorName,
                    at: now()))
            lines.append("fixture \(entry.fixture): \(entry.cn) (ledger seq \(record.seq)) marked failed: \(reason)")
        }
        return lines
    }
}

/// One file per fixture under `run/inflight/`: the device whose certificate may be committed but not confirmed.
public struct InflightJournal: Sendable {
    public struct Entry: Codable, Sendable {
        public var fixture: String
        public var cn: String
        public var hardwareID: String
        public var startedAt: Date
    }

    public let directory: String

    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func path(_ fixture: String) -> String { "\(directory)/\(fixture).json" }

    /// Writes the entry durably (write, fsync, rename, fsync the directory).
    func begin(fixture: String, cn: String, hardwareID: String, at: Date) throws {
        let data = try JSONEncoder().encode(Entry(fixture: fixture, cn: cn, hardwareID: hardwareID, startedAt: at))
        let tmp = path(fixture) + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KeylineError(.ioError, "cannot write \(tmp): \(String(cString: strerror(errno)))") }
        let ok = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count } && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path(fixture)) == 0 else {
            throw KeylineError(.ioError, "cannot write \(path(fixture)): \(String(cString: strerror(errno)))")
        }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }

    func end(fixture: String) { unlink(path(fixture)) }

    func leftovers() -> [Entry] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".json") }.sorted().compactMap { name in
            guard let data = FileManager.default.contents(atPath: "\(directory)/\(name)") else { return nil }
            guard let e = try? JSONDecoder().decode(Entry.self, from: data) else {
                unlink("\(directory)/\(name)")
                return nil
            }
            return e
        }
    }
}
