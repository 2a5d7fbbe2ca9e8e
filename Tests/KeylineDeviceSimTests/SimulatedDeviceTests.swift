import Crypto
import Foundation
import Testing
import X509

@testable import KeylineCore
@testable import KeylineDeviceSim

/// Plays the station: sends frames, decodes what the device answers.
struct Station {
    var decoder = DeviceProtocol.Decoder()
    let device: SimulatedDevice

    mutating func send(
        _ frame: DeviceProtocol.Frame
    ) -> (frames: [Result<DeviceProtocol.Frame, DeviceProtocol.DecodeError>], disconnected: Bool) {
        var bytes: [UInt8] = []
        var disconnected = false
        for o in device.receive(frame.encoded) {
            switch o {
            case .send(let b): bytes += b
            case .disconnect: disconnected = true
            case .delay: break
            }
        }
        return (decoder.feed(bytes), disconnected)
    }

    mutating func ask(_ words: String, payload: [UInt8]? = nil) -> DeviceProtocol.Frame? {
        let r = send(DeviceProtocol.Frame(words: words.split(separator: " ").map(String.init), payload: payload))
        guard r.frames.count == 1, case .success(let f) = r.frames[0] else { return nil }
        return f
    }
}

/// A throwaway CA that signs what the device asks for.
struct TestCA {
    let key = P256.Signing.PrivateKey()
    func issue(for csr: CertificateSigningRequest) throws -> Certificate {
        let name = try DistinguishedName { CommonName("Test CA") }
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: csr.publicKey,
            notValidBefore: Date().addingTimeInterval(-60), notValidAfter: Date().addingTimeInterval(86400),
            issuer: name, subject: csr.subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: Certificate.Extensions(),
            issuerPrivateKey: Certificate.PrivateKey(key))
    }
}

func tempDir() -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("devsim-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

@Suite("Simulated device")
struct SimulatedDeviceTests {
    @Test("a well-behaved device: handshake, identify, CSR, store, read-back matching what was issued, lock")
    func happyPath() throws {
        let dir = tempDir()
        var st = Station(device: SimulatedDevice(hardwareID: "HW 7", directory: dir))
        #expect(st.ask("IDENTIFY")?.words.prefix(2) == ["ERR", "STATE"])
        #expect(st.ask("HELLO keyline/1")?.words == ["OK", "HELLO", "keyline/1"])
        let asked63 = st.ask("IDENTIFY")
        let id = try #require(asked63)
        #expect(id.fields["hw"] == "HW 7" && id.fields["keygen"] == "yes")
        let asked66 = st.ask("CSR cn=SN-7")
        let csrFrame = try #require(asked66)
        let csr = try CertificateSigningRequest(
            pemEncoded: String(decoding: try #require(csrFrame.payload), as: UTF8.self))
        #expect(csr.publicKey.isValidSignature(csr.signature, for: csr))
        #expect(csr.subject.description == "CN=SN-7")
        // Asked again, the same key.
        let asked74 = st.ask("CSR cn=SN-7")?.payload
        let again = try CertificateSigningRequest(
            pemEncoded: String(decoding: try #require(asked74), as: UTF8.self))
        #expect(again.publicKey == csr.publicKey)
        let cert = try TestCA().issue(for: csr)
        let der = try CertificateFactory.der(cert)
        #expect(st.ask("READBACK")?.words == ["OK", "READBACK", "cert=none", "pubkey=none"])
        #expect(
            st.ask("STORE-CERT", payload: Array(try cert.serializeAsPEM().pemString.utf8) + [0x0A])?.words == [
                "OK", "STORED",
            ])
        let asked84 = st.ask("READBACK")
        let rb = try #require(asked84)
        #expect(rb.fields["cert"] == Hex.sha256(der))
        #expect(rb.fields["pubkey"] == CertificateFactory.publicKeyFingerprint(csr.publicKey))
        #expect(FileManager.default.fileExists(atPath: "\(dir)/HW 7/cert.pem"))
        #expect(st.ask("LOCK")?.words == ["OK", "LOCKED"])
        #expect(
            st.ask("STORE-CERT", payload: Array(try cert.serializeAsPEM().pemString.utf8))?.words.prefix(2) == [
                "ERR", "LOCKED",
            ])
        // Power cycle: a new simulator on the same directory reads back what was stored.
        var again2 = Station(device: SimulatedDevice(hardwareID: "HW 7", directory: dir))
        _ = again2.ask("HELLO keyline/1")
        #expect(again2.ask("READBACK")?.fields["cert"] == Hex.sha256(der))
    }

    @Test("misbehaviours the station must survive")
    func misbehaviours() throws {
        func device(_ set: (inout DeviceBehaviour) -> Void) -> Station {
            var b = DeviceBehaviour()
            set(&b)
            var st = Station(device: SimulatedDevice(hardwareID: "HW-1", behaviour: b))
            _ = st.send(DeviceProtocol.Frame(words: ["HELLO", "keyline/1"]))
            return st
        }
        var st = device { $0.wrongChecksum = true }
        let r = st.send(DeviceProtocol.Frame(words: ["CSR", "cn=SN-1"]))
        guard case .failure(.checksumMismatch) = r.frames.first else {
            Issue.record("expected a checksum mismatch, got \(r.frames)")
            return
        }
        st = device { $0.noKeygen = true }
        #expect(st.ask("IDENTIFY")?.fields["keygen"] == "no")
        #expect(st.ask("CSR cn=SN-1")?.words.prefix(2) == ["ERR", "NOKEYGEN"])
        st = device { $0.disconnectMidWrite = true }
        let cut = st.send(DeviceProtocol.Frame(words: ["STORE-CERT"], payload: Array("x".utf8)))
        #expect(cut.disconnected && cut.frames.isEmpty)
        st = device { $0.silent = true }
        #expect(st.send(DeviceProtocol.Frame(words: ["PING"])).frames.isEmpty)
        st = device { $0.garbage = true }
        #expect(st.send(DeviceProtocol.Frame(words: ["PING"])).frames == [.failure(.notText)])
        st = device { $0.requestedCN = "EVIL/../CN" }
        #expect(st.ask("IDENTIFY")?.fields["cn"] == "EVIL/../CN")
        st = device { $0.delayMillis = 250 }
        let outputs = st.device.receive(DeviceProtocol.Frame(words: ["PING"]).encoded)
        #expect(outputs.first == .delay(milliseconds: 250))
    }

    @Test("a station payload with a wrong checksum is refused and nothing is stored")
    func badPayload() {
        var st = Station(device: SimulatedDevice(hardwareID: "HW-2"))
        _ = st.ask("HELLO keyline/1")
        var bytes = DeviceProtocol.Frame(
            words: ["STORE-CERT"], payload: Array("-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n".utf8)
        ).encoded
        bytes[bytes.count - 5] ^= 0x01
        var frames: [Result<DeviceProtocol.Frame, DeviceProtocol.DecodeError>] = []
        for o in st.device.receive(bytes) { if case .send(let b) = o { frames += st.decoder.feed(b) } }
        #expect(frames.count == 1)
        if case .success(let f) = frames[0] { #expect(f.words.prefix(2) == ["ERR", "CHECKSUM"]) }
        #expect(st.ask("READBACK")?.words == ["OK", "READBACK", "cert=none", "pubkey=none"])
    }
}
