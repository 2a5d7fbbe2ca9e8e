import Crypto
import Foundation
import KeylineCore
import SwiftASN1
import X509

/// How a simulated device misbehaves (all off: a well-behaved device).
public struct DeviceBehaviour: Sendable, Equatable {
    /// Answer every request with a line of garbage bytes.
    public var garbage = false
    /// Announce a wrong SHA-256 with the CSR payload.
    public var wrongChecksum = false
    /// Never answer.
    public var silent = false
    /// Drop the connection when asked to store, before storing.
    public var disconnectMidWrite = false
    /// Report a read-back digest that is not the stored certificate's.
    public var wrongReadback = false
    /// Ask for this CN in IDENTIFY (a CN outside the profile, to be refused).
    public var requestedCN: String?
    /// Cannot make keys: answer CSR with ERR NOKEYGEN and say keygen=no.
    public var noKeygen = false
    /// Wait this long before each answer.
    public var delayMillis = 0

    public init() {}
}

/// What the device does next: send bytes, wait, or drop the connection.
public enum DeviceOutput: Sendable, Equatable {
    case send([UInt8])
    case delay(milliseconds: Int)
    case disconnect
}

/// The device side of protocol v1, without I/O: bytes in, outputs out. It makes its own P-256 key (once), writes
/// what it is sent under `directory/<hardware id>/` and answers READBACK from what it stored there.
public final class SimulatedDevice {
    public let hardwareID: String
    public let model: String
    public let firmware: String
    public let behaviour: DeviceBehaviour
    /// Where it stores: `directory/<hardware id>/cert.pem` (and `key.pem` for a station-made key). Nil: memory only.
    public let directory: String?
    private var decoder = DeviceProtocol.Decoder()
    private var key: P256.Signing.PrivateKey?
    private var storedPEM: [UInt8]?
    private var storedKeyPEM: [UInt8]?
    private var greeted = false
    /// Set once the device answered READBACK with a stored certificate: what a station reads last before PASS.
    public private(set) var readBackStored = false
    private var locked = false

    public init(
        hardwareID: String, model: String = "sim", firmware: String = "1.0.0", directory: String? = nil,
        behaviour: DeviceBehaviour = DeviceBehaviour()
    ) {
        self.hardwareID = hardwareID
        self.model = model
        self.firmware = firmware
        self.directory = directory
        self.behaviour = behaviour
        if let dir = storeDirectory, let data = FileManager.default.contents(atPath: "\(dir)/cert.pem") {
            storedPEM = Array(data)  // what survived a power cycle
        }
        // A device whose key lives in flash keeps it across power cycles (the station then re-delivers).
        if let dir = storeDirectory, let data = FileManager.default.contents(atPath: "\(dir)/device-key.pem") {
            key = try? P256.Signing.PrivateKey(pemRepresentation: String(decoding: data, as: UTF8.self))
        }
    }

    var storeDirectory: String? { directory.map { "\($0)/\(hardwareID)" } }

    /// Feeds bytes from the station; returns what the device does, in order.
    public func receive(_ bytes: [UInt8]) -> [DeviceOutput] {
        var out: [DeviceOutput] = []
        for result in decoder.feed(bytes) {
            if behaviour.silent { continue }
            let reply: [DeviceOutput]
            switch result {
            case .failure(.checksumMismatch): reply = [line("ERR CHECKSUM payload does not match its SHA-256")]
            case .failure(.lineTooLong): reply = [line("ERR SYNTAX line longer than 1024 bytes")]
            case .failure(let e): reply = [line("ERR SYNTAX \(e)")]
            case .success(let frame): reply = handle(frame)
            }
            if behaviour.delayMillis > 0 { out.append(.delay(milliseconds: behaviour.delayMillis)) }
            if behaviour.garbage && reply != [.disconnect] {
                out.append(.send([0xFF, 0x00, 0x13, 0x37, 0x80, 0x0A]))
            } else {
                out += reply
            }
        }
        return out
    }

    func line(_ text: String) -> DeviceOutput { .send(Array(text.utf8) + [0x0A]) }

    func handle(_ f: DeviceProtocol.Frame) -> [DeviceOutput] {
        guard let verb = f.words.first else { return [line("ERR SYNTAX empty request")] }
        if verb != "HELLO" && verb != "PING" && !greeted { return [line("ERR STATE say HELLO keyline/1 first")] }
        switch verb {
        case "HELLO":
            guard f.words.count == 2, f.words[1] == DeviceProtocol.version else {
                return [line("ERR VERSION supported: \(DeviceProtocol.version)")]
            }
            greeted = true
            return [line("OK HELLO \(DeviceProtocol.version)")]
        case "PING": return [line("OK PONG")]
        case "IDENTIFY":
            var words = [
                "OK", "IDENTIFY", "hw=" + DeviceProtocol.percentEncode(hardwareID),
                "model=" + DeviceProtocol.percentEncode(model), "fw=" + DeviceProtocol.percentEncode(firmware),
                "keygen=" + (behaviour.noKeygen ? "no" : "yes"),
            ]
            if let cn = behaviour.requestedCN { words.append("cn=" + DeviceProtocol.percentEncode(cn)) }
            return [line(words.joined(separator: " "))]
        case "CSR":
            guard !behaviour.noKeygen else { return [line("ERR NOKEYGEN this device cannot make keys")] }
            guard let cn = f.fields["cn"], !cn.isEmpty else { return [line("ERR SYNTAX CSR needs cn=CN")] }
            do {
                let pem = Array(try csr(cn: cn).utf8)
                var frame = DeviceProtocol.Frame(words: ["OK", "CSR"], payload: pem).encoded
                if behaviour.wrongChecksum, let i = frame.firstIndex(of: 0x0A) {
                    frame[i - 1] = frame[i - 1] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
                }
                return [.send(frame)]
            } catch {
                return [line("ERR INTERNAL cannot make the CSR")]
            }
        case "STORE-CERT", "STORE-KEY":
            guard let payload = f.payload else { return [line("ERR SYNTAX \(verb) needs a payload")] }
            if locked { return [line("ERR LOCKED storage is locked")] }
            if behaviour.disconnectMidWrite { return [.disconnect] }
            do {
                try store(payload, withKey: verb == "STORE-KEY")
                return [line("OK STORED")]
            } catch {
                return [line("ERR STORAGE \(error)")]
            }
        case "READBACK":
            guard let stored = storedPEM else { return [line("OK READBACK cert=none pubkey=none")] }
            guard let der = try? PEMBlocks.certificates(in: stored).first,
                let cert = try? Certificate(derEncoded: der)
            else { return [line("ERR STORAGE stored certificate is unreadable")] }
            var certHash = Hex.sha256(der)
            if behaviour.wrongReadback { certHash = String(certHash.reversed()) }
            let spki = CertificateFactory.spkiDER(cert.publicKey)
            readBackStored = true
            return [line("OK READBACK cert=\(certHash) pubkey=\(Hex.sha256(spki))")]
        case "LOCK":
            locked = true
            return [line("OK LOCKED")]
        default:
            return [line("ERR UNKNOWN \(DeviceProtocol.percentEncode(verb))")]
        }
    }

    /// A CSR for the device's key (made on first use, then kept), subject CN=cn.
    func csr(cn: String) throws -> String {
        let k = key ?? P256.Signing.PrivateKey()
        if key == nil, let dir = storeDirectory {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data(k.pemRepresentation.utf8).write(to: URL(fileURLWithPath: "\(dir)/device-key.pem"))
            chmod("\(dir)/device-key.pem", 0o600)
        }
        key = k
        let request = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName(cn) },
            privateKey: Certificate.PrivateKey(k), attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256)
        return try request.serializeAsPEM().pemString + "\n"
    }

    func store(_ pem: [UInt8], withKey: Bool) throws {
        let certs = try PEMBlocks.certificates(in: pem)
        guard !certs.isEmpty else { throw SimulatorError("no certificate in the payload") }
        storedPEM = pem
        if withKey { storedKeyPEM = pem }
        if let dir = storeDirectory {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data(pem).write(to: URL(fileURLWithPath: "\(dir)/\(withKey ? "key-and-cert" : "cert").pem"))
            if withKey { try Data(pem).write(to: URL(fileURLWithPath: "\(dir)/cert.pem")) }
        }
    }
}

struct SimulatorError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
