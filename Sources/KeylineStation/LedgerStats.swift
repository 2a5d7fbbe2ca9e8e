import Foundation
import KeylineCore
import KeylineLedger

/// `keyline ledger stats`: counts by profile, CA, state, work order and day, the issuance rate, refusals by rule,
/// and the CAs' days left. One streaming pass over the records and one over the refusal events; memory grows only
/// with the number of distinct days, profiles, CAs and work orders.
public struct LedgerStats: Sendable, Encodable {
    public struct Rate: Sendable, Encodable {
        public var first_issued: String?
        public var last_issued: String?
        /// Records per hour between the first and the last issuance.
        public var average_per_hour: Double
        /// The busiest clock hour (UTC) and how many were issued in it.
        public var busiest_hour: String?
        public var busiest_hour_count: Int
        /// Issued in the 24 hours before now.
        public var last_24h: Int
    }

    public struct CA: Sendable, Encodable {
        public var name: String
        public var status: String
        public var records: Int
        public var not_after: String
        public var days_left: Int
        public var issuing_days_left: Int?
        public var warning: String?
    }

    public var station_id: String
    public var records: Int
    public var events: Int64
    public var by_state: [String: Int]
    public var by_profile: [String: Int]
    public var by_ca: [String: Int]
    public var by_work_order: [String: Int]
    /// Issued per UTC day, `YYYY-MM-DD`.
    public var by_day: [String: Int]
    public var rate: Rate
    /// Refusal events by the rule that refused (the part of the detail before the first colon).
    public var refusals_by_rule: [String: Int]
    public var refusals: Int
    public var cas: [CA]
    public var generated_at: String

    public static func compute(station: Station, now: Date = Date()) async throws -> LedgerStats {
        var byState: [String: Int] = [:]
        for s in RecordState.allCases { byState[s.rawValue] = 0 }
        var byProfile: [String: Int] = [:]
        var byCA: [String: Int] = [:]
        var byWorkOrder: [String: Int] = [:]
        var byDay: [String: Int] = [:]
        var byHour: [Int64: Int] = [:]
        var first: Date?
        var last: Date?
        var total = 0
        var last24 = 0
        let dayAgo = now.addingTimeInterval(-86_400)
        try await station.ledger.forEachRecord(RecordQuery()) { r in
            let c = r.content
            total += 1
            byState[r.state.rawValue, default: 0] += 1
            byProfile[c.profile, default: 0] += 1
            byCA[c.caName, default: 0] += 1
            byWorkOrder[c.workOrder ?? "(none)", default: 0] += 1
            let ms = Timestamp.millis(c.createdAt)
            byHour[ms / 3_600_000, default: 0] += 1
            if first.map({ c.createdAt < $0 }) ?? true { first = c.createdAt }
            if last.map({ c.createdAt > $0 }) ?? true { last = c.createdAt }
            if c.createdAt >= dayAgo { last24 += 1 }
        }
        for (hour, n) in byHour {
            let day = String(Timestamp.iso(Date(timeIntervalSince1970: Double(hour * 3600))).prefix(10))
            byDay[day, default: 0] += n
        }
        let busiest = byHour.max { a, b in a.value < b.value || (a.value == b.value && a.key > b.key) }
        var refusals: [String: Int] = [:]
        var refusalCount = 0
        try await station.ledger.forEachEvent(kinds: [.refused], afterSeq: 0) { e in
            refusalCount += 1
            let detail = e.content.detail
            let rule = detail.firstIndex(of: ":").map { String(detail[..<$0]) } ?? detail
            refusals[rule.count <= 40 && !rule.contains(" ") ? rule : "other", default: 0] += 1
        }
        let span = (last ?? now).timeIntervalSince(first ?? now)
        let config = station.config
        var cas: [CA] = []
        for name in config.cas.keys.sorted() {
            let c = config.cas[name]!
            guard let ca = try? CALoader.certificateOnly(c) else { continue }
            let health = CAHealth(
                ca: ca, active: c.status == .active,
                profileMinValidityDays: config.profiles.values.filter { $0.caName == name }.map(\.minValidityDays),
                warningDays: config.caExpiryWarningDays, now: now)
            cas.append(
                CA(
                    name: name, status: c.status.rawValue, records: byCA[name] ?? 0,
                    not_after: Timestamp.iso(ca.certificate.notValidAfter), days_left: health.daysLeft,
                    issuing_days_left: health.issuingDaysLeft, warning: health.warning))
        }
        return LedgerStats(
            station_id: config.stationID, records: total, events: try await station.ledger.heads().eventsSeq,
            by_state: byState, by_profile: byProfile, by_ca: byCA, by_work_order: byWorkOrder, by_day: byDay,
            rate: Rate(
                first_issued: first.map(Timestamp.isoMillis), last_issued: last.map(Timestamp.isoMillis),
                average_per_hour: total == 0 ? 0 : (span < 3600 ? Double(total) : Double(total) / (span / 3600)),
                busiest_hour: busiest.map { Timestamp.iso(Date(timeIntervalSince1970: Double($0.key * 3600))) },
                busiest_hour_count: busiest?.value ?? 0, last_24h: last24),
            refusals_by_rule: refusals, refusals: refusalCount, cas: cas, generated_at: Timestamp.isoMillis(now))
    }
}
