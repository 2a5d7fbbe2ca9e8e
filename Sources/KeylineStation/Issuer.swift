import Crypto
import Foundation
import KeylineCore
import KeylineCustody
import KeylineLedger
import SwiftASN1
import X509

/// A certificate that was committed to the ledger and may now leave the station.
public struct IssuedCertificate: Sendable {
    public var record: LedgerRecord
    public var certificate: Certificate
    /// PEM of the leaf alone.
    public var pem: String
}

/// The station's issuance service: policy, then reserve → sign → commit through the ledger. Nothing here writes a
/// certificate anywhere; callers write only what this returned, which is already durable.
public struct Issuer: Sendable {
    public let station: Station
    public let profile: Profile
    public let policy: IssuancePolicy
    public let loaded: LoadedCA
    public let operatorName: String
    /// The clock and the serial source, injectable for tests.
    public var now: @Sendable () -> Date = { Date() }
    public var randomBytes: @Sendable (Int) -> [UInt8] = { n in SystemRandom.bytes(n) }

    public init(station: Station, profile: Profile, loaded: LoadedCA, operatorName: String) throws {
        self.station = station
        self.profile = profile
        self.policy = try IssuancePolicy(profile: profile)
        self.loaded = loaded
        self.operatorName = operatorName
        self.descriptionTemplate = try profile.jitp.descriptionTemplate.map(DescriptionTemplate.init)
    }

    /// The profile's description template, compiled once; rendered per device at issuance.
    let descriptionTemplate: DescriptionTemplate?

    /// Refuses `error` on the record: appends a `refused` event (the only trace a refusal leaves) and rethrows.
    public func refuse(_ error: KeylineError, cn: String?) async throws -> Never {
        _ = try? await station.ledger.recordRefusal(cn: cn, reason: error.reason, operatorName: operatorName, at: now())
        throw error
    }

    /// Signs one CSR (PEM or DER bytes). Refusals are recorded as events and thrown.
    public func sign(
        csrBytes: [UInt8], hardwareID: String? = nil, workOrder: String? = nil, reissue: Bool = false
    ) async throws -> IssuedCertificate {
        let csr: CSRInput
        do {
            csr = try CSRInput(bytes: csrBytes)
        } catch let error as KeylineError {
            try await refuse(error, cn: nil)
        }
        let accepted: (cn: String, publicKey: Certificate.PublicKey)
        switch policy.evaluate(csr) {
        case .success(let value): accepted = value
        case .failure(let error):
            try await refuse(error, cn: csr.claimedCN)
        }
        return try await issue(
            cn: accepted.cn, publicKey: accepted.publicKey, origin: .device, hardwareID: hardwareID,
            workOrder: workOrder, reissue: reissue)
    }

    /// Signs many CSRs, each judged on its own, with one ledger commit for all that pass (group commit). Parsing
    /// and proof of possession run on every core; a refused CSR leaves its `refused` event and a failure in its
    /// slot, and every certificate returned is already durable. One result per CSR, in order. An error that is not
    /// a refusal (the ledger) is thrown, and then nothing of the group was committed.
    public func signEach(
        _ csrs: [[UInt8]], workOrder: String? = nil, reissue: Bool = false
    ) async throws -> [Result<IssuedCertificate, KeylineError>] {
        enum Judged: Sendable {
            case accepted(cn: String, publicKey: Certificate.PublicKey)
            case refused(KeylineError, cn: String?)
        }
        let judged: [Judged] = try Parallel.map(csrs.count) { i in
            let csr: CSRInput
            do {
                csr = try CSRInput(bytes: csrs[i])
            } catch let error as KeylineError {
                return .refused(error, cn: nil)
            }
            switch policy.evaluate(csr) {
            case .success(let value): return .accepted(cn: value.cn, publicKey: value.publicKey)
            case .failure(let error): return .refused(error, cn: csr.claimedCN)
            }
        }
        var results = [Result<IssuedCertificate, KeylineError>?](repeating: nil, count: csrs.count)
        var requests: [(index: Int, request: Request)] = []
        for (i, verdict) in judged.enumerated() {
            switch verdict {
            case .accepted(let cn, let key): requests.append((i, Request(cn: cn, publicKey: key)))
            case .refused(let error, let cn):
                _ = try? await station.ledger.recordRefusal(
                    cn: cn, reason: error.reason, operatorName: operatorName, at: now())
                results[i] = .failure(error)
            }
        }
        if !requests.isEmpty {
            let issued = try await issueEach(requests.map(\.request), workOrder: workOrder, reissue: reissue)
            for (slot, result) in zip(requests, issued) { results[slot.index] = result }
        }
        return results.map { $0! }
    }

    /// Reserve → sign → commit many certificates in one transaction, each judged on its own: refused ones come
    /// back as failures (their events committed with the rest), the others as durable certificates.
    public func issueEach(
        _ requests: [Request], origin: KeyOrigin = .device, workOrder: String? = nil, reissue: Bool = false
    ) async throws -> [Result<IssuedCertificate, KeylineError>] {
        let at = now()
        let validity: (notBefore: Date, notAfter: Date)
        switch leafValidity(at: at) {
        case .success(let v): validity = v
        case .failure(let error):
            for r in requests {
                _ = try? await station.ledger.recordRefusal(
                    cn: r.cn, reason: error.reason, operatorName: operatorName, at: at)
            }
            return requests.map { _ in .failure(error) }
        }
        let reservations = reservations(for: requests, reissue: reissue)
        var signing = Signing(requests: requests, reservations: reservations)
        let make = contentMaker(origin: origin, workOrder: workOrder, at: at, validity: validity)
        let records = try await station.ledger.issueEach(reservations) { try signing.sign($0, make) }
        return try records.map { result in
            switch result {
            case .failure(let error): return .failure(error)
            case .success(let record): return .success(try signing.issued(record))
            }
        }
    }

    /// Builds and signs one reserved request's certificate and record content, for ``Signing/sign(_:_:)``.
    private func contentMaker(
        origin: KeyOrigin, workOrder: String?, at: Date, validity: (notBefore: Date, notAfter: Date)
    ) -> @Sendable (Reservation, Request) throws -> (content: RecordContent, certificate: Certificate, pem: String) {
        { r, request in
            try makeContent(r, request, origin: origin, workOrder: workOrder, at: at, validity: validity)
        }
    }

    /// What was signed in one ledger call, found again by (CN, key) when the records come back. The ledger hands
    /// `signAll` the accepted reservations only, in order, all at once or in consecutive slices; a backend without
    /// a shared commit calls it once per reservation, and one that retries a transaction calls it again: the last
    /// signing of each is the one committed.
    private struct Signing {
        let requests: [Request]
        let requestFor: [String: Int]
        var built: [String: (certificate: Certificate, pem: String, der: [UInt8])] = [:]

        init(requests: [Request], reservations: [Reservation]) {
            self.requests = requests
            requestFor = Dictionary(
                reservations.enumerated().map { (Self.key($1.cn, $1.publicKeySHA256), $0) }, uniquingKeysWith: min)
        }

        static func key(_ cn: String, _ publicKeySHA256: String) -> String { "\(cn)\u{0}\(publicKeySHA256)" }

        /// Signs `reserved` on every core through `make`, remembering each certificate; returns the contents in order.
        mutating func sign(
            _ reserved: [Reservation],
            _ make:
                @Sendable (Reservation, Request) throws -> (
                    content: RecordContent, certificate: Certificate, pem: String
                )
        ) throws -> [RecordContent] {
            let requests = requests
            let requestFor = requestFor
            let signed = try Parallel.map(reserved.count) { k in
                guard let i = requestFor[Self.key(reserved[k].cn, reserved[k].publicKeySHA256)] else {
                    throw KeylineError(.internalError, "the ledger reserved a request that was not made")
                }
                return try make(reserved[k], requests[i])
            }
            for item in signed {
                built[Self.key(item.content.cn, item.content.publicKeySHA256)] = (
                    item.certificate, item.pem, item.content.certificateDER
                )
            }
            return signed.map(\.content)
        }

        /// The certificate of a committed record, which must be the one signed here.
        func issued(_ record: LedgerRecord) throws -> IssuedCertificate {
            guard let cert = built[Self.key(record.content.cn, record.content.publicKeySHA256)],
                cert.der == record.content.certificateDER
            else {
                throw KeylineError(.internalError, "the ledger committed a record that was not signed here")
            }
            return IssuedCertificate(record: record, certificate: cert.certificate, pem: cert.pem)
        }
    }

    /// Checks a station-chosen CN against the profile; refusals are recorded and thrown.
    public func checkCN(_ cn: String) async throws {
        try await enforce(policy.cnRule.check(cn), cn: cn)
    }

    /// Refuses `cn` when `verdict` is a refusal (recorded and thrown, as ``refuse(_:cn:)``); nothing otherwise.
    public func enforce(_ verdict: PolicyVerdict, cn: String?) async throws {
        if case .refuse(let rule, let reason) = verdict { try await refuse(.refused(rule, reason), cn: cn) }
    }

    /// One certificate to issue: a CN and a public key that passed the policy.
    public struct Request: Sendable {
        public let cn: String
        public let publicKey: Certificate.PublicKey
        public var hardwareID: String?
        /// The key's SubjectPublicKeyInfo DER, encoded once here: its fingerprint and the certificate's subject key
        /// identifier are taken from it (encoding a P-256 point costs a field inversion each time).
        public let subjectPublicKeyInfo: [UInt8]

        public init(cn: String, publicKey: Certificate.PublicKey, hardwareID: String? = nil) {
            self.cn = cn
            self.publicKey = publicKey
            self.hardwareID = hardwareID
            self.subjectPublicKeyInfo = CertificateFactory.spkiDER(publicKey)
        }

        /// SHA-256 of ``subjectPublicKeyInfo``, the ledger's identity of the key.
        public var publicKeySHA256: String { CertificateFactory.publicKeyFingerprint(spki: subjectPublicKeyInfo) }
    }

    /// Reserve → sign → commit one certificate for a public key that passed the policy.
    public func issue(
        cn: String, publicKey: Certificate.PublicKey, origin: KeyOrigin, hardwareID: String? = nil,
        workOrder: String? = nil, reissue: Bool = false
    ) async throws -> IssuedCertificate {
        try await issueBatch(
            [Request(cn: cn, publicKey: publicKey, hardwareID: hardwareID)], origin: origin, workOrder: workOrder,
            reissue: reissue)[0]
    }

    /// Reserve → sign → commit many certificates in one transaction (all or none). With `reissue`, every CN must
    /// have a revoked certificate that the new one replaces (rework).
    public func issueBatch(
        _ requests: [Request], origin: KeyOrigin, workOrder: String? = nil, reissue: Bool = false
    ) async throws
        -> [IssuedCertificate]
    {
        let at = now()
        let validity: (notBefore: Date, notAfter: Date)
        switch leafValidity(at: at) {
        case .success(let v): validity = v
        case .failure(let error): try await refuse(error, cn: requests.first?.cn)
        }
        let reservations = reservations(for: requests, reissue: reissue)
        var signing = Signing(requests: requests, reservations: reservations)
        // Reserved, in request order (all at once or in slices): signed on every core, each with its own serial.
        let make = contentMaker(origin: origin, workOrder: workOrder, at: at, validity: validity)
        let records = try await station.ledger.issueBatch(reservations) { try signing.sign($0, make) }
        return try records.map { try signing.issued($0) }
    }

    /// The validity of a certificate issued at `at` under this profile and CA, or why there is none.
    private func leafValidity(at: Date) -> Result<(notBefore: Date, notAfter: Date), KeylineError> {
        CertificateFactory.leafValidity(
            now: at, validityDays: profile.validityDays, minValidityDays: profile.minValidityDays,
            ca: loaded.ca.certificate)
    }

    /// What the ledger must check before any of `requests` is signed.
    private func reservations(for requests: [Request], reissue: Bool) -> [Reservation] {
        requests.map {
            Reservation(
                cn: $0.cn, publicKeySHA256: $0.publicKeySHA256,
                operatorName: operatorName, reissue: reissue)
        }
    }

    private func makeContent(
        _ r: Reservation, _ request: Request, origin: KeyOrigin, workOrder: String?, at: Date,
        validity: (notBefore: Date, notAfter: Date)
    ) throws -> (content: RecordContent, certificate: Certificate, pem: String) {
        let serial = try CertificateFactory.serial(fromRandom: randomBytes(20))
        let cert = try CertificateFactory.leaf(
            cn: r.cn, publicKey: request.publicKey, profile: profile, ca: loaded.ca, signer: loaded.signer,
            serial: serial, notBefore: validity.notBefore, notAfter: validity.notAfter,
            subjectKeyIdentifier: CertificateFactory.keyIdentifier(spki: request.subjectPublicKeyInfo))
        let der = try CertificateFactory.der(cert)
        var content = RecordContent(
            cn: r.cn, serialHex: Hex.upper(serial.bytes), certificateFingerprint: Hex.sha256(der),
            publicKeySHA256: r.publicKeySHA256, caFingerprint: loaded.ca.fingerprint, caName: loaded.ca.name,
            profile: profile.name, stationID: station.config.stationID, operatorName: operatorName, keyOrigin: origin,
            hardwareID: request.hardwareID, workOrder: workOrder, notBefore: validity.notBefore,
            notAfter: validity.notAfter,
            certificateDER: der, createdAt: at, reissueOf: r.reissueOf)
        // The backend attributes are decided now, with the description rendered from this very record.
        content.attributes = DeviceManifestRow.attributes(for: content, profile: profile, template: descriptionTemplate)
        // The PEM too, here on the signing cores: from the DER just made, not by serializing the certificate again.
        return (content, cert, PEM.encode(der, label: "CERTIFICATE"))
    }

    /// The PEM of the issuing CA and the certificates above it, nearest first (for `--chain` and `CN.chain.pem`).
    public var chainPEM: String {
        get throws {
            try ([loaded.ca.certificate] + loaded.ca.chain).map { try $0.serializeAsPEM().pemString }.joined(
                separator: "\n") + "\n"
        }
    }
}
