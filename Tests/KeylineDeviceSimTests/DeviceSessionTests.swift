import Crypto
import Foundation
import Testing
import X509

@testable import KeylineCore
@testable import KeylineDeviceSim

/// Runs the station's session against a simulated device, doing what the daemon will do with each action. The
/// issuer is a test CA; a silent device is a timeout.
struct Harness {
    var issueCalls: [(cn: String, hw: String, csr: Bool)] = []
    var delivered: [Int64] = []
    var refuse: String?
    /// What the device reported holding when the station was about to make its key.
    var heldSeen: [String?] = []
    /// Certificates issued so far, by SHA-256: a device that holds one is confirmed without a second.
    var issuedBySHA: [String: Int64] = [:]
    let ca = TestCA()
    var nextSeq: Int64 = 1

    mutating func run(_ device: SimulatedDevice, _ config: DeviceSession.Config) throws -> DeviceSession.Outcome {
        var session = DeviceSession(config: config)
        var decoder = DeviceProtocol.Decoder()
        var queue = session.handle(.start)
        var steps = 0
        while !queue.isEmpty {
            steps += 1
            guard steps < 200 else {
                Issue.record("the session did not end")
                break
            }
            let action = queue.removeFirst()
            switch action {
            case .finish(let outcome):
                #expect(session.isDone)
                return outcome
            case .markDelivered(let seq): delivered.append(seq)
            case .issue(let cn, let hw, let csrPEM, let held):
                issueCalls.append((cn, hw, csrPEM != nil))
                heldSeen.append(held)
                if let refuse {
                    queue += session.handle(.issueRefused(refuse))
                    continue
                }
                if let held, let seq = issuedBySHA[held] {
                    queue += session.handle(.alreadyHeld(seq: seq))
                    continue
                }
                queue += session.handle(.issued(try issue(cn: cn, csrPEM: csrPEM)))
            case .send(let frame, _):
                var bytes: [UInt8] = []
                var cut = false
                for o in device.receive(frame.encoded) {
                    if case .send(let b) = o { bytes += b }
                    if case .disconnect = o { cut = true }
                }
                if cut {
                    queue += session.handle(.disconnected)
                    continue
                }
                let results = decoder.feed(bytes)
                if results.isEmpty { queue += session.handle(.timeout) }
                for r in results {
                    switch r {
                    case .success(let f): queue += session.handle(.frame(f))
                    case .failure(let e): queue += session.handle(.decodeError(e))
                    }
                }
            }
        }
        Issue.record("no outcome")
        return .fail(cn: nil, seq: nil, reason: "none")
    }

    mutating func issue(cn: String, csrPEM: [UInt8]?) throws -> DeviceSession.Issued {
        let seq = nextSeq
        nextSeq += 1
        var keyPEM = ""
        let publicKey: Certificate.PublicKey
        if let csrPEM {
            let csr = try CertificateSigningRequest(pemEncoded: String(decoding: csrPEM, as: UTF8.self))
            #expect(csr.publicKey.isValidSignature(csr.signature, for: csr))
            publicKey = csr.publicKey
        } else {
            let key = P256.Signing.PrivateKey()
            keyPEM = key.pemRepresentation + "\n"
            publicKey = Certificate.PublicKey(key.publicKey)
        }
        let cert = try ca.issue(subject: try DistinguishedName { CommonName(cn) }, publicKey: publicKey)
        let der = try CertificateFactory.der(cert)
        issuedBySHA[Hex.sha256(der)] = seq
        return DeviceSession.Issued(
            seq: seq, certificateSHA256: Hex.sha256(der),
            publicKeySHA256: CertificateFactory.publicKeyFingerprint(publicKey),
            payload: Array((keyPEM + (try cert.serializeAsPEM().pemString) + "\n").utf8), stationMadeKey: csrPEM == nil)
    }
}

extension TestCA {
    func issue(subject: DistinguishedName, publicKey: Certificate.PublicKey) throws -> Certificate {
        try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: Date().addingTimeInterval(-60), notValidAfter: Date().addingTimeInterval(86400),
            issuer: try DistinguishedName { CommonName("Test CA") }, subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: Certificate.Extensions(), issuerPrivateKey: Certificate.PrivateKey(key))
    }
}

let fromHardwareID = DeviceSession.Config(cnForHardwareID: { "SN-" + $0 })

func sim(_ set: (inout DeviceBehaviour) -> Void = { _ in }) -> SimulatedDevice {
    var b = DeviceBehaviour()
    set(&b)
    return SimulatedDevice(hardwareID: "HW1", behaviour: b)
}

@Suite("Device session (the station's state machine) against the simulated device")
struct DeviceSessionTests {
    @Test("a device that makes its key: CSR, issue, store, matching read-back, delivered")
    func pass() throws {
        var h = Harness()
        var config = fromHardwareID
        config.lock = true
        #expect(try h.run(sim(), config) == .pass(cn: "SN-HW1", seq: 1))
        #expect(h.delivered == [1])
        #expect(h.issueCalls.count == 1 && h.issueCalls[0].csr && h.issueCalls[0].hw == "HW1")
    }

    @Test("a device without key generation gets a station-made key, and its read-back is checked the same way")
    func stationKey() throws {
        var h = Harness()
        #expect(try h.run(sim { $0.noKeygen = true }, fromHardwareID) == .pass(cn: "SN-HW1", seq: 1))
        #expect(h.issueCalls.map(\.csr) == [false])
        #expect(h.heldSeen == [nil])  // asked what it holds first: nothing yet
    }

    @Test("a device without key generation that already holds its certificate is confirmed, not given a second key")
    func stationKeyReturning() throws {
        var h = Harness()
        let device = sim { $0.noKeygen = true }
        #expect(try h.run(device, fromHardwareID) == .pass(cn: "SN-HW1", seq: 1))
        // The device comes back (a brown-out before the station heard OK STORED): it reads back what it holds.
        #expect(try h.run(device, fromHardwareID) == .pass(cn: "SN-HW1", seq: 1))
        #expect(h.heldSeen.count == 2 && h.heldSeen[1] != nil)
        #expect(h.issuedBySHA.count == 1, "no second certificate was made")
        #expect(h.delivered == [1, 1])
    }

    @Test("a read-back that does not match fails the issued record and is never delivered")
    func wrongReadback() throws {
        var h = Harness()
        guard case .fail(let cn, let seq, let reason) = try h.run(sim { $0.wrongReadback = true }, fromHardwareID)
        else {
            Issue.record("expected a failure")
            return
        }
        #expect(cn == "SN-HW1" && seq == 1 && reason.contains("read-back does not match"))
        #expect(h.delivered.isEmpty)
    }

    @Test("a silent device and a corrupt one fail after the retries, before anything is issued")
    func unresponsive() throws {
        for device in [sim { $0.silent = true }, sim { $0.garbage = true }] {
            var h = Harness()
            guard case .fail(_, let seq, let reason) = try h.run(device, fromHardwareID) else {
                Issue.record("expected a failure")
                continue
            }
            #expect(seq == nil && reason.contains("4 tries"))
            #expect(h.issueCalls.isEmpty)
        }
    }

    @Test("a CSR with a wrong checksum is asked for again, then the device fails; nothing is issued")
    func checksum() throws {
        var h = Harness()
        guard case .fail(_, nil, let reason) = try h.run(sim { $0.wrongChecksum = true }, fromHardwareID) else {
            Issue.record("expected a failure without a record")
            return
        }
        #expect(reason.contains("corrupt answer") && h.issueCalls.isEmpty)
    }

    @Test("pulled mid-write: the issued record is reported for failing, not delivered")
    func disconnect() throws {
        var h = Harness()
        #expect(
            try h.run(sim { $0.disconnectMidWrite = true }, fromHardwareID)
                == .fail(cn: "SN-HW1", seq: 1, reason: "the device disconnected"))
        #expect(h.delivered.isEmpty)
    }

    @Test("the device's own CN is used only when the profile accepts device CNs; refusals end the session")
    func cnChoice() throws {
        var h = Harness()
        _ = try h.run(sim { $0.requestedCN = "DEV-CN" }, fromHardwareID)
        #expect(h.issueCalls.map(\.cn) == ["SN-HW1"])
        var accepting = fromHardwareID
        accepting.acceptDeviceCN = true
        h = Harness()
        _ = try h.run(sim { $0.requestedCN = "DEV-CN" }, accepting)
        #expect(h.issueCalls.map(\.cn) == ["DEV-CN"])
        h = Harness()
        h.refuse = "cn-pattern: CN 'DEV-CN' does not match"
        #expect(
            try h.run(sim { $0.requestedCN = "DEV-CN" }, accepting)
                == .fail(cn: "DEV-CN", seq: nil, reason: "cn-pattern: CN 'DEV-CN' does not match"))
        h = Harness()
        #expect(
            try h.run(sim(), DeviceSession.Config(cnForHardwareID: { _ in nil }))
                == .fail(cn: nil, seq: nil, reason: "no CN for hardware id 'HW1'"))
    }

    /// A session of a device that made its key, brought to the point where its certificate is being stored.
    func storingSession(_ config: DeviceSession.Config, seq: Int64) -> (DeviceSession, DeviceSession.Issued) {
        var s = DeviceSession(config: config)
        _ = s.handle(.start)
        _ = s.handle(.frame(.init(words: ["OK", "HELLO", "keyline/1"])))
        _ = s.handle(.frame(.init(words: ["OK", "IDENTIFY", "hw=HW1", "keygen=yes"])))
        _ = s.handle(.frame(.init(words: ["OK", "CSR"], payload: Array("csr".utf8))))
        let issued = DeviceSession.Issued(
            seq: seq, certificateSHA256: String(repeating: "C", count: 64),
            publicKeySHA256: String(repeating: "D", count: 64), payload: Array("pem".utf8), stationMadeKey: false)
        _ = s.handle(.issued(issued))
        return (s, issued)
    }

    @Test("a locked device that already holds the certificate is delivered; one holding another fails")
    func lockedReturning() throws {
        func session() -> (DeviceSession, DeviceSession.Issued) { storingSession(fromHardwareID, seq: 4) }
        var (s, issued) = session()
        #expect(
            s.handle(.frame(.init(words: ["ERR", "LOCKED", "x"]))) == [.send(.init(words: ["READBACK"]), timeout: 5)])
        #expect(
            s.handle(
                .frame(
                    .init(words: [
                        "OK", "READBACK", "cert=" + issued.certificateSHA256, "pubkey=" + issued.publicKeySHA256,
                    ])))
                == [.markDelivered(seq: 4), .finish(.pass(cn: "SN-HW1", seq: 4))])
        (s, issued) = session()
        _ = s.handle(.frame(.init(words: ["ERR", "LOCKED", "x"])))
        #expect(
            s.handle(.frame(.init(words: ["OK", "READBACK", "cert=" + String(repeating: "E", count: 64), "pubkey=x"])))
                == [.finish(.fail(cn: "SN-HW1", seq: 4, reason: "the device is locked and holds another certificate"))])
    }

    @Test("LOCK is best effort: no answer to it still delivers the confirmed device")
    func lockTimeout() throws {
        var config = fromHardwareID
        config.lock = true
        config.maxRetries = 0
        var (s, issued) = storingSession(config, seq: 5)
        _ = s.handle(.frame(.init(words: ["OK", "STORED"])))
        #expect(
            s.handle(
                .frame(
                    .init(words: [
                        "OK", "READBACK", "cert=" + issued.certificateSHA256, "pubkey=" + issued.publicKeySHA256,
                    ])))
                == [.send(.init(words: ["LOCK"]), timeout: 5)])
        #expect(s.handle(.timeout) == [.markDelivered(seq: 5), .finish(.pass(cn: "SN-HW1", seq: 5))])
    }

    @Test("a hardware id with spaces or control characters (after percent-decoding) is refused before anything")
    func badHardwareID() {
        for hw in ["HW%201", "HW%0A1", String(repeating: "A", count: 65)] {
            var s = DeviceSession(config: fromHardwareID)
            _ = s.handle(.start)
            _ = s.handle(.frame(.init(words: ["OK", "HELLO", "keyline/1"])))
            let out = s.handle(.frame(.init(words: ["OK", "IDENTIFY", "hw=" + hw, "keygen=yes"])))
            #expect(
                out == [
                    .finish(
                        .fail(
                            cn: nil, seq: nil,
                            reason: "the device's hardware id is not 1-64 printable characters without spaces"))
                ],
                "\(hw)")
        }
    }

    @Test("a store answered with ERR CHECKSUM is sent again; a timeout on store asks READBACK before resending")
    func storeRetries() {
        var s = DeviceSession(config: fromHardwareID)
        _ = s.handle(.start)
        _ = s.handle(.frame(.init(words: ["OK", "HELLO", "keyline/1"])))
        // A device without key generation is first asked what it holds.
        #expect(
            s.handle(.frame(.init(words: ["OK", "IDENTIFY", "hw=HW1", "keygen=no"])))
                == [.send(.init(words: ["READBACK"]), timeout: 5)])
        #expect(
            s.handle(.frame(.init(words: ["OK", "READBACK", "cert=none", "pubkey=none"])))
                == [.issue(cn: "SN-HW1", hardwareID: "HW1", csrPEM: nil, held: nil)])
        let issued = DeviceSession.Issued(
            seq: 9, certificateSHA256: String(repeating: "A", count: 64),
            publicKeySHA256: String(repeating: "B", count: 64),
            payload: Array("pem".utf8), stationMadeKey: true)
        let store = s.handle(.issued(issued))
        #expect(store == [.send(.init(words: ["STORE-KEY"], payload: Array("pem".utf8)), timeout: 15)])
        #expect(s.handle(.frame(.init(words: ["ERR", "CHECKSUM", "x"]))) == store)
        #expect(s.handle(.timeout) == [.send(.init(words: ["READBACK"]), timeout: 5)])
        // Not stored: sent again. Stored after all: delivered.
        #expect(s.handle(.frame(.init(words: ["OK", "READBACK", "cert=none", "pubkey=none"]))) == store)
        #expect(s.handle(.frame(.init(words: ["OK", "STORED"]))) == [.send(.init(words: ["READBACK"]), timeout: 5)])
        #expect(
            s.handle(
                .frame(
                    .init(words: [
                        "OK", "READBACK", "cert=" + issued.certificateSHA256, "pubkey=" + issued.publicKeySHA256,
                    ])))
                == [.markDelivered(seq: 9), .finish(.pass(cn: "SN-HW1", seq: 9))])
        #expect(s.handle(.timeout) == [])  // done is done
    }
}
