import Crypto
import Foundation

/// Where a certificate's private key was made.
public enum KeyOrigin: String, Sendable, Codable, CaseIterable {
    /// The device made its key and sent a CSR.
    case device
    /// The station made the keypair and handed it to the device.
    case station
}

/// A ledger record's life: issued when committed, delivered once the device confirmed it, failed when delivery
/// failed, revoked on rework, scrap or compromise.
public enum RecordState: String, Sendable, Codable, CaseIterable {
    case issued
    case delivered
    case failed
    case revoked

    /// Whether a record in this state may move to `next`. Revoked is final; a failed delivery may still succeed on
    /// a retry.
    public func canBecome(_ next: RecordState) -> Bool {
        switch (self, next) {
        case (.issued, .delivered), (.issued, .failed), (.issued, .revoked): true
        case (.failed, .delivered), (.failed, .revoked), (.delivered, .revoked): true
        default: false
        }
    }
}

/// What a new record will hold, known before the ledger assigns its sequence number and chain hash.
public struct RecordContent: Sendable, Equatable {
    public var cn: String
    public var serialHex: String
    public var certificateFingerprint: String
    public var publicKeySHA256: String
    public var caFingerprint: String
    public var caName: String
    public var profile: String
    public var stationID: String
    public var operatorName: String
    public var keyOrigin: KeyOrigin
    public var hardwareID: String?
    public var workOrder: String?
    public var notBefore: Date
    public var notAfter: Date
    public var certificateDER: [UInt8]
    public var createdAt: Date
    /// What the backend is to assign this device, fixed at issuance from the profile (nil for records made
    /// before the ledger kept them).
    public var attributes: DeviceAttributes?
    /// The sequence number of the revoked record this one re-issues the CN of (rework), nil for a first issuance.
    public var reissueOf: Int64?

    public init(
        cn: String, serialHex: String, certificateFingerprint: String, publicKeySHA256: String,
        caFingerprint: String, caName: String, profile: String, stationID: String, operatorName: String,
        keyOrigin: KeyOrigin, hardwareID: String?, workOrder: String? = nil, notBefore: Date, notAfter: Date,
        certificateDER: [UInt8], createdAt: Date, attributes: DeviceAttributes? = nil, reissueOf: Int64? = nil
    ) {
        self.cn = cn
        self.serialHex = serialHex
        self.certificateFingerprint = certificateFingerprint
        self.publicKeySHA256 = publicKeySHA256
        self.caFingerprint = caFingerprint
        self.caName = caName
        self.profile = profile
        self.stationID = stationID
        self.operatorName = operatorName
        self.keyOrigin = keyOrigin
        self.hardwareID = hardwareID
        self.workOrder = workOrder
        // Normalised to what the ledger stores (whole seconds, milliseconds), so a record read back equals the one
        // written and hashes the same.
        self.notBefore = Timestamp.wholeSeconds(notBefore)
        self.notAfter = Timestamp.wholeSeconds(notAfter)
        self.certificateDER = certificateDER
        self.createdAt = Timestamp.wholeMillis(createdAt)
        self.attributes = attributes
        self.reissueOf = reissueOf
    }
}

/// A device's backend attributes as the profile gave them when its certificate was issued: the rendered
/// description, tags, product, cohort and target. Kept in the record (and its hash), so a manifest exported later
/// says what was decided at issuance even when the profile has changed since.
public struct DeviceAttributes: Sendable, Equatable {
    public var description: String
    public var tags: [String]
    public var productPRN: String?
    public var cohortPRN: String?
    public var target: String?

    public init(description: String, tags: [String], productPRN: String?, cohortPRN: String?, target: String?) {
        self.description = description
        self.tags = tags
        self.productPRN = productPRN
        self.cohortPRN = cohortPRN
        self.target = target
    }
}

/// One issued certificate in the ledger.
public struct LedgerRecord: Sendable, Equatable {
    /// The record's position in the station's hash chain, from 1.
    public var seq: Int64
    public var content: RecordContent
    /// Current state; every change is also an event, and verification checks the two agree.
    public var state: RecordState
    public var updatedAt: Date
    /// The previous record's hash (64 zero hex digits for the first record).
    public var prevHash: String
    /// SHA-256 over `prevHash` and the canonical content.
    public var hash: String

    public init(seq: Int64, content: RecordContent, state: RecordState, updatedAt: Date, prevHash: String, hash: String)
    {
        self.seq = seq
        self.content = content
        self.state = state
        self.updatedAt = Timestamp.wholeMillis(updatedAt)
        self.prevHash = prevHash
        self.hash = hash
    }

    /// The upper-case hex of `count` zero bytes: the chain's genesis.
    public static let genesisHash = String(repeating: "0", count: 64)

    /// The detail of a record's `issued` event.
    public static func issuedDetail(_ c: RecordContent) -> String {
        "serial \(c.serialHex)" + (c.reissueOf.map { ", re-issue of seq \($0)" } ?? "")
    }

    /// Why `record` may not move to `next` (nil when it may).
    public static func transitionRefusal(_ record: LedgerRecord, to next: RecordState) -> KeylineError? {
        guard record.state.canBecome(next) else {
            return KeylineError(
                .dataError,
                "CN '\(record.content.cn)' (ledger seq \(record.seq)) is \(record.state.rawValue) and cannot become \(next.rawValue)"
            )
        }
        return nil
    }
}

/// Why a certificate was revoked (`keyline ledger revoke --reason`).
public enum RevocationReason: String, Sendable, Codable, CaseIterable {
    /// The device is reworked and will get a new certificate under the same CN (`--reissue`).
    case rework
    /// The device is destroyed.
    case scrap
    /// The device's key is, or may be, known to someone else.
    case compromised
    /// Another certificate replaces this one.
    case superseded
}

/// What an event says happened.
public enum EventKind: String, Sendable, Codable, CaseIterable {
    case issued
    case refused
    case delivered
    case failed
    case revoked
    case exported
    case caImported = "ca-imported"
    case stationInitialized = "station-initialized"
    case verificationCertificate = "verification-certificate"
    /// A signed checkpoint of the heads was handed out (`ledger checkpoint`, every manifest export).
    case checkpoint
    /// QA compared the ledger with a backend export (`ledger reconcile`); the detail holds the counts.
    case reconciled
    /// A work order was opened or closed (`keyline workorder`); the detail is its JSON.
    case workOrderOpened = "work-order-opened"
    case workOrderClosed = "work-order-closed"
    /// The daemon started or stopped on this station (`keyline run`); the detail names its fixtures.
    case daemonStarted = "daemon-started"
    case daemonStopped = "daemon-stopped"
}

/// What an event will hold before the ledger numbers and chains it.
public struct EventContent: Sendable, Equatable {
    public var kind: EventKind
    /// The record this event is about, when there is one (a refusal has none).
    public var recordSeq: Int64?
    public var cn: String?
    /// A one-line detail: the refusal's rule and reason, a revocation's reason. Never secret.
    public var detail: String
    public var stationID: String
    public var operatorName: String
    public var at: Date

    public init(
        kind: EventKind, recordSeq: Int64?, cn: String?, detail: String, stationID: String, operatorName: String,
        at: Date
    ) {
        self.kind = kind
        self.recordSeq = recordSeq
        self.cn = cn
        self.detail = detail
        self.stationID = stationID
        self.operatorName = operatorName
        self.at = Timestamp.wholeMillis(at)
    }
}

/// One entry of the append-only audit trail.
public struct LedgerEvent: Sendable, Equatable {
    public var seq: Int64
    public var content: EventContent
    public var prevHash: String
    public var hash: String

    public init(seq: Int64, content: EventContent, prevHash: String, hash: String) {
        self.seq = seq
        self.content = content
        self.prevHash = prevHash
        self.hash = hash
    }
}

/// The canonical encodings the hash chains are computed over.
///
/// Each field is written as a 4-byte big-endian length and its UTF-8 bytes, in a fixed order, behind a version
/// tag; dates as integer Unix seconds (validity) or milliseconds (timestamps), exactly as stored. Changing this is a ledger format change.
public enum ChainHash {
    /// The record hash: SHA-256("keyline-record-v1" ‖ prevHash ‖ seq ‖ content).
    public static func record(seq: Int64, prevHash: String, content c: RecordContent) -> String {
        var h = Hasher256(tag: "keyline-record-v1")
        h.add(prevHash)
        h.add(String(seq))
        h.add(c.cn)
        h.add(c.serialHex)
        h.add(c.certificateFingerprint)
        h.add(c.publicKeySHA256)
        h.add(c.caFingerprint)
        h.add(c.caName)
        h.add(c.profile)
        h.add(c.stationID)
        h.add(c.operatorName)
        h.add(c.keyOrigin.rawValue)
        h.add(c.hardwareID)
        h.add(c.workOrder)
        h.add(String(Timestamp.seconds(c.notBefore)))
        h.add(String(Timestamp.seconds(c.notAfter)))
        h.add(Hex.sha256(c.certificateDER))
        h.add(String(Timestamp.millis(c.createdAt)))
        // Added with the attributes; records without them hash exactly as before.
        if let a = c.attributes {
            h.add("attributes-v1")
            h.add(a.description)
            h.add(a.tags.joined(separator: ","))
            h.add(a.productPRN)
            h.add(a.cohortPRN)
            h.add(a.target)
        }
        // Added with re-issue; first issuances hash exactly as before.
        if let prior = c.reissueOf {
            h.add("reissue-v1")
            h.add(String(prior))
        }
        return h.finish()
    }

    /// The event hash: SHA-256("keyline-event-v1" ‖ prevHash ‖ seq ‖ content).
    public static func event(seq: Int64, prevHash: String, content c: EventContent) -> String {
        var h = Hasher256(tag: "keyline-event-v1")
        h.add(prevHash)
        h.add(String(seq))
        h.add(c.kind.rawValue)
        h.add(c.recordSeq.map(String.init))
        h.add(c.cn)
        h.add(c.detail)
        h.add(c.stationID)
        h.add(c.operatorName)
        h.add(String(Timestamp.millis(c.at)))
        return h.finish()
    }

    /// The tag and each field as a 4-byte big-endian length and its UTF-8 (absent: FF FF FF FF), hashed once at the
    /// end: a record is about 700 bytes, and two hash updates with two arrays a field cost more than the hash.
    struct Hasher256 {
        var bytes: [UInt8] = []
        init(tag: String) {
            bytes.reserveCapacity(1024)
            add(tag)
        }
        mutating func add(_ s: String?) {
            guard let s else {
                bytes.append(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF])
                return
            }
            let n = UInt32(s.utf8.count)
            bytes.append(UInt8(n >> 24))
            bytes.append(UInt8(n >> 16 & 0xFF))
            bytes.append(UInt8(n >> 8 & 0xFF))
            bytes.append(UInt8(n & 0xFF))
            bytes.append(contentsOf: s.utf8)
        }
        func finish() -> String { Hex.upper(SHA256.hash(data: bytes)) }
    }

    /// The state a record should be in given the state-changing events about it, in order.
    public static func expectedState(after kinds: [EventKind]) -> RecordState {
        var state = RecordState.issued
        for kind in kinds {
            switch kind {
            case .delivered: state = .delivered
            case .failed: state = .failed
            case .revoked: state = .revoked
            case .issued: state = .issued
            default: break
            }
        }
        return state
    }
}
