import Crypto
import Foundation
import SwiftASN1
import Testing
import X509

@testable import KeylineCore
@testable import KeylineCustody
@testable import KeylineLedger
@testable import KeylineStation

func newStation() async throws -> (Station, String) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keyline-station-\(UUID().uuidString)").path
    _ = try await StationSetup.initialize(directory: dir)
    return (try await Station.open(directory: dir), dir)
}

func csrDER(
    cn: String, key: Certificate.PrivateKey = Certificate.PrivateKey(P256.Signing.PrivateKey())
) throws -> [UInt8] {
    let csr = try CertificateSigningRequest(
        version: .v1, subject: try DistinguishedName { CommonName(cn) }, privateKey: key, attributes: .init())
    var s = DER.Serializer()
    try s.serialize(csr)
    return s.serializedBytes
}

func issuer(_ station: Station, now: Date = Date()) throws -> Issuer {
    let loaded = try CALoader.load(
        station.config.cas["dev"]!,
        passphrases: PassphraseSources(configuredFile: station.config.cas["dev"]!.passphraseFile), now: now)
    return try Issuer(
        station: station, profile: try station.config.profile(nil), loaded: loaded, operatorName: "tester")
}

@Suite("Station: init and issuance")
struct IssuerTests {
    @Test("init makes a dev CA whose issuing certificate is CA:TRUE pathlen 0 and whose key opens with the passphrase")
    func initStation() async throws {
        let (station, dir) = try await newStation()
        let loaded = try CALoader.load(
            station.config.cas["dev"]!, passphrases: PassphraseSources(configuredFile: "\(dir)/secrets/dev.passphrase"),
            now: Date())
        #expect(try loaded.ca.certificate.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
        #expect(loaded.ca.chain.count == 1)
        #expect(station.warnings.isEmpty)
        var st = stat()
        for (path, mode) in [("ca/dev/ca.key", 0o600), ("secrets/dev.passphrase", 0o600), ("secrets", 0o700)] {
            #expect(stat("\(dir)/\(path)", &st) == 0)
            #expect(Int(st.st_mode & 0o777) == mode, "\(path)")
        }
        #expect(try await station.ledger.count() == 0)
        #expect(
            try await station.ledger.events(recordSeq: nil, limit: nil).map(\.content.kind) == [.stationInitialized])
    }

    @Test("init refuses an existing station and leaves it untouched")
    func initRefusesExisting() async throws {
        let (_, dir) = try await newStation()
        let before = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/station.toml"))
        await #expect(throws: KeylineError(.usage, "")) { try await StationSetup.initialize(directory: dir) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/station.toml")) == before)
    }

    @Test("a CSR is signed, recorded with its fingerprint, serial and key, and chains to the dev CA")
    func signs() async throws {
        let (station, _) = try await newStation()
        let i = try issuer(station)
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let issued = try await i.sign(csrBytes: try csrDER(cn: "dev-0001", key: key), hardwareID: "hw-1")
        let r = issued.record
        #expect(r.content.cn == "dev-0001")
        #expect(r.content.hardwareID == "hw-1")
        #expect(r.content.keyOrigin == .device)
        #expect(r.content.operatorName == "tester")
        #expect(r.content.certificateFingerprint == Hex.sha256(try CertificateFactory.der(issued.certificate)))
        #expect(r.content.publicKeySHA256 == CertificateFactory.publicKeyFingerprint(key.publicKey))
        #expect(r.content.serialHex == Hex.upper(issued.certificate.serialNumber.bytes))
        #expect(r.content.caFingerprint == i.loaded.ca.fingerprint)
        #expect(
            i.loaded.ca.certificate.publicKey.isValidSignature(issued.certificate.signature, for: issued.certificate))
        #expect(try await station.ledger.record(cn: "dev-0001") == r)
    }

    @Test(
        "refusals leave an audit event and no record", arguments: ["", "has space", String(repeating: "z", count: 65)])
    func refusalsAreAudited(_ cn: String) async throws {
        let (station, _) = try await newStation()
        let i = try issuer(station)
        await #expect(throws: KeylineError(.policyRefusal, "")) { try await i.sign(csrBytes: try csrDER(cn: cn)) }
        #expect(try await station.ledger.count() == 0)
        let last = try await station.ledger.events(recordSeq: nil, limit: nil).last
        #expect(last?.content.kind == .refused)
    }

    @Test(
        "signEach signs a group, each CSR judged on its own, results in order (SQLite: one commit; memory: one each)",
        arguments: ["sqlite", "memory"])
    func signEach(_ backend: String) async throws {
        var (station, _) = try await newStation()
        if backend == "memory" { station.ledger = InMemoryLedger(stationID: station.config.stationID) }
        let i = try issuer(station)
        _ = try await i.sign(csrBytes: try csrDER(cn: "taken"))
        let reused = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let inputs: [[UInt8]] = [
            try csrDER(cn: "grp-1", key: reused),
            Array("not a csr".utf8),
            try csrDER(cn: "has space"),
            try csrDER(cn: "taken"),
            try csrDER(cn: "grp-2"),
            try csrDER(cn: "grp-3", key: reused),
        ]
        let results = try await i.signEach(inputs)
        #expect(results.count == inputs.count)
        let codes = results.map { result -> String in
            switch result {
            case .success(let issued): return issued.record.content.cn
            case .failure(let e): return e.rule ?? "\(e.code)"
            }
        }
        #expect(codes == ["grp-1", "dataError", "cn", "unique-cn", "grp-2", "unique-public-key"])
        // Every certificate returned is the one the ledger holds, signed by the CA, with the CSR's key.
        for case .success(let issued) in results {
            #expect(try await station.ledger.record(cn: issued.record.content.cn) == issued.record)
            #expect(
                issued.record.content.certificateFingerprint
                    == Hex.sha256(try CertificateFactory.der(issued.certificate)))
            #expect(
                i.loaded.ca.certificate.publicKey.isValidSignature(
                    issued.certificate.signature, for: issued.certificate))
        }
        #expect(try results[0].get().certificate.publicKey == reused.publicKey)
        #expect(try await station.ledger.count() == 3)
        let kinds = try await station.ledger.events(recordSeq: nil, limit: nil).map(\.content.kind)
        #expect(kinds.filter { $0 == .refused }.count == 4, "each refused CSR leaves one event")
        #expect(try await station.ledger.verify().isIntact)
    }

    @Test("garbage input is refused as bad data with an audit event")
    func garbage() async throws {
        let (station, _) = try await newStation()
        let i = try issuer(station)
        await #expect(throws: KeylineError(.dataError, "")) { try await i.sign(csrBytes: Array("not a csr".utf8)) }
        #expect(try await station.ledger.events(recordSeq: nil, limit: nil).last?.content.kind == .refused)
    }

    @Test("an expired or not-yet-valid CA is refused by the key guard")
    func caValidity() async throws {
        let (station, _) = try await newStation()
        let c = station.config.cas["dev"]!
        let sources = PassphraseSources(configuredFile: c.passphraseFile)
        #expect(throws: KeylineError(.keyGuard, "")) {
            try CALoader.load(c, passphrases: sources, now: Date().addingTimeInterval(-86400))
        }
        #expect(throws: KeylineError(.keyGuard, "")) {
            try CALoader.load(c, passphrases: sources, now: Date().addingTimeInterval(11 * 366 * 86400))
        }
    }

    @Test("a retired CA signs nothing")
    func retired() async throws {
        let (station, _) = try await newStation()
        var c = station.config.cas["dev"]!
        c.status = .retired
        #expect(throws: KeylineError(.configuration, "")) {
            try CALoader.load(c, passphrases: PassphraseSources(configuredFile: c.passphraseFile), now: Date())
        }
    }

    @Test("a key that does not match its CA certificate is refused")
    func mismatch() async throws {
        let (a, _) = try await newStation()
        let (b, _) = try await newStation()
        var c = a.config.cas["dev"]!
        c.key = b.config.cas["dev"]!.key
        c.passphraseFile = b.config.cas["dev"]!.passphraseFile
        do {
            _ = try CALoader.load(c, passphrases: PassphraseSources(configuredFile: c.passphraseFile), now: Date())
            Issue.record("a foreign key was accepted")
        } catch let e as KeylineError {
            #expect(e.code == .keyGuard && e.reason.contains("does not match"))
        }
    }

    @Test("station-made keys are issued in one all-or-nothing batch with origin 'station'")
    func batch() async throws {
        let (station, _) = try await newStation()
        let i = try issuer(station)
        let keys = (1...3).map { _ in P256.Signing.PrivateKey() }
        let issued = try await i.issueBatch(
            keys.enumerated().map {
                Issuer.Request(cn: "SN-\($0.offset)", publicKey: Certificate.PublicKey($0.element.publicKey))
            },
            origin: .station)
        #expect(issued.map(\.record.content.cn) == ["SN-0", "SN-1", "SN-2"])
        #expect(issued.allSatisfy { $0.record.content.keyOrigin == .station })
        #expect(try await station.ledger.verify().isIntact)
    }
}
