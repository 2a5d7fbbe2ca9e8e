import Foundation
import KeylineCore
import KeylineLedger

/// A work order: a quantity of devices to build under one profile. While one is open for a profile, the daemon
/// issues under it (each record carries its id) and refuses beyond its quantity.
///
/// Work orders live in the ledger's event trail (`work-order-opened`, `work-order-closed`), so they are
/// hash-chained like everything else and every station command sees the same ones.
public struct WorkOrder: Sendable, Equatable, Codable {
    public var id: String
    public var profile: String
    public var quantity: Int
    public var openedAt: Date
    public var openedBy: String
    public var closedAt: Date?
    public var closedBy: String?

    public var isOpen: Bool { closedAt == nil }

    enum CodingKeys: String, CodingKey {
        case id, profile, quantity
        case openedAt = "opened_at"
        case openedBy = "opened_by"
        case closedAt = "closed_at"
        case closedBy = "closed_by"
    }
}

public enum WorkOrders {
    /// A work order id: 1-64 letters, digits, `.`, `_`, `-` (it goes into every record and manifest).
    public static let idPattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

    struct OpenedDetail: Codable {
        var id: String
        var profile: String
        var quantity: Int
    }

    /// Every work order, in the order they were opened.
    public static func all(_ ledger: any Ledger) async throws -> [WorkOrder] {
        var book = WorkOrderBook()
        try await book.refresh(from: ledger)
        return book.orders
    }

    /// How many certificates count against a work order: those issued under it and not revoked (a scrapped
    /// unit frees its place for the replacement).
    public static func issuedCount(_ id: String, in ledger: any Ledger) async throws -> Int {
        var n = 0
        try await ledger.forEachRecordState(RecordQuery(workOrder: id)) { _, state in
            if state != .revoked { n += 1 }
        }
        return n
    }

    /// Opens a work order. Refuses an id already used, a profile that has one open, or a quantity below 1.
    public static func open(
        station: Station, id: String?, profile: String, quantity: Int, operatorName: String, now: Date = Date()
    ) async throws -> WorkOrder {
        _ = try station.config.profile(profile)
        guard quantity >= 1, quantity <= 10_000_000 else {
            throw KeylineError(.usage, "--quantity must be between 1 and 10000000")
        }
        let existing = try await all(station.ledger)
        let chosen = id ?? nextID(existing, now: now)
        guard chosen.range(of: idPattern, options: .regularExpression) != nil else {
            throw KeylineError(
                .usage, "work order id '\(chosen)' must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric"
            )
        }
        if existing.contains(where: { $0.id == chosen }) {
            throw KeylineError(.dataError, "work order '\(chosen)' already exists; choose another --id")
        }
        if let open = existing.last(where: { $0.isOpen && $0.profile == profile }) {
            throw KeylineError(
                .dataError,
                "profile '\(profile)' already has work order '\(open.id)' open; close it first ('keyline workorder close \(open.id)')"
            )
        }
        let detail = String(
            decoding: try JSONEncoder().encode(OpenedDetail(id: chosen, profile: profile, quantity: quantity)),
            as: UTF8.self)
        let event = try await station.ledger.appendEvent(
            EventContent(
                kind: .workOrderOpened, recordSeq: nil, cn: nil, detail: detail, stationID: station.config.stationID,
                operatorName: operatorName, at: now))
        return WorkOrder(
            id: chosen, profile: profile, quantity: quantity, openedAt: event.content.at, openedBy: operatorName)
    }

    /// Closes an open work order: the daemon issues nothing more under it.
    public static func close(
        station: Station, id: String, operatorName: String, now: Date = Date()
    ) async throws -> WorkOrder {
        guard var order = try await all(station.ledger).first(where: { $0.id == id }) else {
            throw KeylineError(.dataError, "no work order '\(id)' (see 'keyline workorder list')")
        }
        guard order.isOpen else { throw KeylineError(.dataError, "work order '\(id)' is already closed") }
        let detail = String(
            decoding: try JSONEncoder().encode(OpenedDetail(id: id, profile: order.profile, quantity: order.quantity)),
            as: UTF8.self)
        let event = try await station.ledger.appendEvent(
            EventContent(
                kind: .workOrderClosed, recordSeq: nil, cn: nil, detail: detail, stationID: station.config.stationID,
                operatorName: operatorName, at: now))
        order.closedAt = event.content.at
        order.closedBy = operatorName
        return order
    }

    /// `WO-YYYYMMDD-N`, the first N not taken.
    static func nextID(_ existing: [WorkOrder], now: Date) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: "UTC")!
        let c = cal.dateComponents([.year, .month, .day], from: now)
        let day = String(format: "WO-%04d%02d%02d-", c.year ?? 0, c.month ?? 0, c.day ?? 0)
        let taken = Set(existing.map(\.id))
        var n = 1
        while taken.contains(day + String(n)) { n += 1 }
        return day + String(n)
    }
}

/// The work orders as the ledger's events say, read incrementally: each ``refresh(from:)`` reads only the events
/// appended since the last, so the daemon can look before every device without scanning the whole trail.
public struct WorkOrderBook: Sendable {
    public private(set) var orders: [WorkOrder] = []
    var index: [String: Int] = [:]
    var lastEventSeq: Int64 = 0

    public init() {}

    /// The open work order for `profile`, if any.
    public func open(for profile: String) -> WorkOrder? { orders.last { $0.isOpen && $0.profile == profile } }

    public mutating func refresh(from ledger: any Ledger) async throws {
        let head = try await ledger.heads().eventsSeq
        var fresh: [LedgerEvent] = []
        try await ledger.forEachEvent(kinds: [.workOrderOpened, .workOrderClosed], afterSeq: lastEventSeq) {
            fresh.append($0)
        }
        for e in fresh { apply(e) }
        lastEventSeq = max(head, fresh.last?.seq ?? 0)
    }

    mutating func apply(_ e: LedgerEvent) {
        guard let data = e.content.detail.data(using: .utf8),
            let d = try? JSONDecoder().decode(WorkOrders.OpenedDetail.self, from: data)
        else { return }
        if e.content.kind == .workOrderOpened {
            index[d.id] = orders.count
            orders.append(
                WorkOrder(
                    id: d.id, profile: d.profile, quantity: d.quantity, openedAt: e.content.at,
                    openedBy: e.content.operatorName))
        } else if let i = index[d.id] {
            orders[i].closedAt = e.content.at
            orders[i].closedBy = e.content.operatorName
        }
    }
}
