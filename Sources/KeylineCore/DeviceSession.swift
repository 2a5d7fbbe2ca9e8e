/// The station's side of one device's exchange (protocol v1) as a pure state machine: events in (frames from the
/// device, timeouts, the outcome of issuance), actions out (frames to send with their timeout, "issue now", "mark
/// delivered", the final outcome). The daemon runs one per device on a fixture and performs the actions; the
/// machine itself does no I/O, so every path is tested by feeding events.
///
/// The order it enforces: HELLO → IDENTIFY → choose the CN → CSR (or the station makes the key) → issue (reserve,
/// sign, commit: the daemon's job) → STORE → READBACK, and the device is delivered only when the read-back matches
/// the certificate and key the ledger holds.
public struct DeviceSession: Sendable {
    public struct Config: Sendable {
        /// The CN for a device's hardware id (the profile's CN template); nil when it has none.
        public var cnForHardwareID: @Sendable (String) -> String?
        /// Whether a CN the device asks for (`cn=` in IDENTIFY) is used (the profile still checks it).
        public var acceptDeviceCN: Bool
        /// Seconds to wait for an answer, per kind of request (docs/device-protocol.md).
        public var responseTimeout = 5.0
        public var csrTimeout = 30.0
        public var storeTimeout = 15.0
        /// How many times a request that is safe to repeat is sent again after a timeout or a corrupt answer.
        public var maxRetries = 3
        /// Send LOCK after a matching read-back.
        public var lock = false

        public init(cnForHardwareID: @escaping @Sendable (String) -> String?, acceptDeviceCN: Bool = false) {
            self.cnForHardwareID = cnForHardwareID
            self.acceptDeviceCN = acceptDeviceCN
        }
    }

    /// What issuance returned: the record and what the device must end up holding.
    public struct Issued: Sendable, Equatable {
        public var seq: Int64
        public var certificateSHA256: String
        public var publicKeySHA256: String
        /// The PEM to store: the certificate and its chain, preceded by the private key for a station-made key.
        public var payload: [UInt8]
        public var stationMadeKey: Bool

        public init(
            seq: Int64, certificateSHA256: String, publicKeySHA256: String, payload: [UInt8], stationMadeKey: Bool
        ) {
            self.seq = seq
            self.certificateSHA256 = certificateSHA256
            self.publicKeySHA256 = publicKeySHA256
            self.payload = payload
            self.stationMadeKey = stationMadeKey
        }
    }

    public enum Event: Sendable, Equatable {
        case start
        case frame(DeviceProtocol.Frame)
        case decodeError(DeviceProtocol.DecodeError)
        case timeout
        case disconnected
        case issued(Issued)
        /// The device already holds the certificate of record `seq` (read back before issuing): nothing to store.
        case alreadyHeld(seq: Int64)
        /// Issuance refused (policy, a known CN with another key, the CA...): the reason, for the operator.
        case issueRefused(String)
    }

    public enum Outcome: Sendable, Equatable {
        case pass(cn: String, seq: Int64)
        /// `seq` is set when a certificate was issued: the daemon marks that record failed.
        case fail(cn: String?, seq: Int64?, reason: String)
    }

    public enum Action: Sendable, Equatable {
        case send(DeviceProtocol.Frame, timeout: Double)
        /// Reserve, sign and commit a certificate for `cn`; `csrPEM` nil means the station makes the key pair.
        /// `held` is the SHA-256 of the certificate a device without key generation already holds (read back
        /// first, so a device that returns after a power loss is not given a second key).
        case issue(cn: String, hardwareID: String, csrPEM: [UInt8]?, held: String?)
        case markDelivered(seq: Int64)
        case finish(Outcome)
    }

    enum Phase: Sendable, Equatable {
        case idle, greeting, identifying, checkingHeld, requestingCSR, issuing, storing, verifyingStore, readingBack,
            locking, done
    }

    public let config: Config
    var phase = Phase.idle
    var lastRequest: (frame: DeviceProtocol.Frame, timeout: Double)?
    var retries = 0
    var storeAttempts = 0
    var lockedRefusal = false
    public private(set) var hardwareID: String?
    public private(set) var cn: String?
    public private(set) var issued: Issued?

    public init(config: Config) { self.config = config }

    public var isDone: Bool { phase == .done }

    public mutating func handle(_ event: Event) -> [Action] {
        guard phase != .done else { return [] }
        switch event {
        case .start:
            guard phase == .idle else { return [] }
            return request(.greeting, ["HELLO", DeviceProtocol.version], timeout: config.responseTimeout)
        case .disconnected:
            return fail("the device disconnected")
        case .timeout:
            return retry(or: "no answer from the device")
        case .decodeError(let e):
            return retry(or: "corrupt answer from the device: \(e)")
        case .issueRefused(let reason):
            guard phase == .issuing else { return [] }
            return fail(reason)
        case .issued(let i):
            guard phase == .issuing else { return [] }
            issued = i
            return store()
        case .alreadyHeld(let seq):
            guard phase == .issuing, let cn else { return [] }
            phase = .done
            return [.markDelivered(seq: seq), .finish(.pass(cn: cn, seq: seq))]
        case .frame(let f):
            return answer(f)
        }
    }

    mutating func request(_ next: Phase, _ words: [String], payload: [UInt8]? = nil, timeout: Double) -> [Action] {
        phase = next
        retries = 0
        let frame = DeviceProtocol.Frame(words: words, payload: payload)
        lastRequest = (frame, timeout)
        return [.send(frame, timeout: timeout)]
    }

    mutating func fail(_ reason: String) -> [Action] {
        phase = .done
        return [.finish(.fail(cn: cn, seq: issued?.seq, reason: reason))]
    }

    /// Repeats the last request when that is safe, else fails.
    mutating func retry(or reason: String) -> [Action] {
        guard let last = lastRequest, phase != .issuing else { return [] }
        if phase == .storing {
            // Whether the certificate got stored is unknown: ask before sending it again.
            phase = .verifyingStore
            lastRequest = (DeviceProtocol.Frame(words: ["READBACK"]), config.responseTimeout)
            return [.send(lastRequest!.frame, timeout: config.responseTimeout)]
        }
        guard retries < config.maxRetries else {
            // LOCK is best effort: the read-back already matched, so the device is delivered unlocked.
            if phase == .locking { return deliver() }
            return fail("\(reason), \(config.maxRetries + 1) tries")
        }
        retries += 1
        return [.send(last.frame, timeout: last.timeout)]
    }

    /// A hardware id the station records and prints: 1-64 printable ASCII characters, no spaces.
    public static func isAcceptableHardwareID(_ hw: String) -> Bool {
        !hw.isEmpty && hw.utf8.count <= 64 && hw.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    mutating func store() -> [Action] {
        guard let i = issued else { return fail("nothing to store") }
        guard storeAttempts <= config.maxRetries else { return fail("the device did not store the certificate") }
        storeAttempts += 1
        return request(
            .storing, [i.stationMadeKey ? "STORE-KEY" : "STORE-CERT"], payload: i.payload, timeout: config.storeTimeout)
    }

    static func isOK(_ f: DeviceProtocol.Frame, _ verb: String) -> Bool {
        f.words.count >= 2 && f.words[0] == "OK" && f.words[1] == verb
    }

    static func errorText(_ f: DeviceProtocol.Frame) -> String? {
        guard f.words.first == "ERR" else { return nil }
        return f.words.dropFirst().joined(separator: " ")
    }

    mutating func answer(_ f: DeviceProtocol.Frame) -> [Action] {
        switch phase {
        case .greeting:
            if Self.isOK(f, "HELLO") && f.words.dropFirst(2).first == DeviceProtocol.version {
                return request(.identifying, ["IDENTIFY"], timeout: config.responseTimeout)
            }
            return fail("handshake refused: " + (Self.errorText(f) ?? f.words.joined(separator: " ")))
        case .identifying:
            guard Self.isOK(f, "IDENTIFY") else { return fail("IDENTIFY refused: \(Self.errorText(f) ?? "?")") }
            let fields = f.fields
            guard let hw = fields["hw"], !hw.isEmpty else { return fail("the device sent no hardware id") }
            guard Self.isAcceptableHardwareID(hw) else {
                return fail("the device's hardware id is not 1-64 printable characters without spaces")
            }
            hardwareID = hw
            if config.acceptDeviceCN, let wanted = fields["cn"], !wanted.isEmpty {
                cn = wanted
            } else if let chosen = config.cnForHardwareID(hw) {
                cn = chosen
            } else {
                return fail("no CN for hardware id '\(hw)'")
            }
            if fields["keygen"] == "yes" {
                return request(
                    .requestingCSR, ["CSR", "cn=" + DeviceProtocol.percentEncode(cn!)], timeout: config.csrTimeout)
            }
            // The station makes the key: first ask what the device already holds.
            return request(.checkingHeld, ["READBACK"], timeout: config.responseTimeout)
        case .checkingHeld:
            guard Self.isOK(f, "READBACK") else {
                return fail("READBACK refused: \(Self.errorText(f) ?? f.words.joined(separator: " "))")
            }
            let held = f.fields["cert"].flatMap { $0 == "none" ? nil : $0.uppercased() }
            phase = .issuing
            return [.issue(cn: cn!, hardwareID: hardwareID!, csrPEM: nil, held: held)]
        case .requestingCSR:
            if Self.isOK(f, "CSR"), let pem = f.payload {
                phase = .issuing
                return [.issue(cn: cn!, hardwareID: hardwareID!, csrPEM: pem, held: nil)]
            }
            if f.words.prefix(2) == ["ERR", "NOKEYGEN"] {
                return request(.checkingHeld, ["READBACK"], timeout: config.responseTimeout)
            }
            return fail("CSR refused: \(Self.errorText(f) ?? f.words.joined(separator: " "))")
        case .storing:
            if Self.isOK(f, "STORED") {
                return request(.readingBack, ["READBACK"], timeout: config.responseTimeout)
            }
            if f.words.prefix(2) == ["ERR", "CHECKSUM"] { return store() }
            if f.words.prefix(2) == ["ERR", "LOCKED"] {
                // A locked device that returns: it may hold this very certificate already. Ask.
                lockedRefusal = true
                return request(.verifyingStore, ["READBACK"], timeout: config.responseTimeout)
            }
            return fail("store refused: \(Self.errorText(f) ?? f.words.joined(separator: " "))")
        case .verifyingStore, .readingBack:
            guard Self.isOK(f, "READBACK"), let i = issued else {
                return fail("READBACK refused: \(Self.errorText(f) ?? f.words.joined(separator: " "))")
            }
            let fields = f.fields
            let matches =
                fields["cert"]?.uppercased() == i.certificateSHA256
                && fields["pubkey"]?.uppercased() == i.publicKeySHA256
            if phase == .verifyingStore && !matches {
                if lockedRefusal { return fail("the device is locked and holds another certificate") }
                return store()  // it was not stored: send it again
            }
            guard matches else {
                return fail(
                    "read-back does not match: the device holds \(fields["cert"]?.prefix(16) ?? "nothing")…, issued \(i.certificateSHA256.prefix(16))…"
                )
            }
            if config.lock { return request(.locking, ["LOCK"], timeout: config.responseTimeout) }
            return deliver()
        case .locking:
            // A device that cannot lock says so; the certificate is stored and confirmed either way.
            return deliver()
        case .idle, .issuing, .done:
            return []  // nothing was asked: ignore
        }
    }

    mutating func deliver() -> [Action] {
        phase = .done
        return [.markDelivered(seq: issued!.seq), .finish(.pass(cn: cn!, seq: issued!.seq))]
    }
}
