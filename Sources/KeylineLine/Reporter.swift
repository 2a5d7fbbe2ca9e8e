import Foundation
import KeylineCore

/// What the line reports about one device: the operator's console line and the MES's JSON line are both made
/// from it.
public struct DeviceReport: Sendable, Equatable, Encodable {
    public var at: Date
    public var event = "device"
    public var fixture: String
    /// "pass" or "fail".
    public var result: String
    public var cn: String?
    public var hardwareID: String?
    public var seq: Int64?
    public var seconds: Double
    /// The station's own share of `seconds`: everything but waiting for the device's answers (policy, signing,
    /// ledger commits, writing to the link).
    public var stationSeconds: Double?
    public var reason: String?
    public var profile: String
    public var workOrder: String?
    public var stationID: String

    public var passed: Bool { result == "pass" }

    enum CodingKeys: String, CodingKey {
        case at, event, fixture, result, cn, seq, seconds, reason, profile
        case hardwareID = "hardware_id"
        case workOrder = "work_order"
        case stationSeconds = "station_seconds"
        case stationID = "station_id"
    }
}

/// Writes the operator's console (one line per device, PASS or FAIL first, readable at a glance) and the JSON
/// lines for the MES (appended to the daemon's log file, flushed per line). Thread-safe: fixtures report from
/// their own threads.
public final class Reporter: @unchecked Sendable {
    let lock = NSLock()
    let console: (String) -> Void
    let jsonOut: FileHandle?
    let stationID: String
    let color: Bool
    /// Every device report, also handed to `onDevice` (the demo unplugs a device when its report arrives).
    public private(set) var devices: [DeviceReport] = []
    public var onDevice: (@Sendable (DeviceReport) -> Void)?

    /// `logPath`: the JSON-lines file (created 0640 if missing, appended to). `console`: where lines go.
    public init(stationID: String, logPath: String?, color: Bool, console: @escaping (String) -> Void) throws {
        self.stationID = stationID
        self.console = console
        self.color = color
        if let logPath {
            let dir = (logPath as NSString).deletingLastPathComponent
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let fd = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else {
                throw KeylineError(
                    .ioError, "cannot open the daemon log \(logPath): \(String(cString: strerror(errno)))")
            }
            jsonOut = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        } else {
            jsonOut = nil
        }
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .custom { date, enc in
            var c = enc.singleValueContainer()
            try c.encode(Timestamp.iso(date))
        }
        return e
    }()

    func writeJSON<T: Encodable>(_ value: T) {
        guard let jsonOut, let data = try? Self.encoder.encode(value) else { return }
        jsonOut.write(data + Data("\n".utf8))
    }

    static func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s : s + String(repeating: " ", count: n - s.count)
    }

    /// One device's outcome.
    public func device(_ r: DeviceReport) {
        let mark =
            r.passed ? (color ? "\u{1B}[1;32mPASS\u{1B}[0m" : "PASS") : (color ? "\u{1B}[1;31mFAIL\u{1B}[0m" : "FAIL")
        var line =
            "\(mark)  \(Self.pad(r.fixture, 8)) \(Self.pad(r.cn ?? "-", 20)) \(Self.pad(r.hardwareID ?? "-", 16)) "
        line += String(format: "%6.2fs", r.seconds)
        if let reason = r.reason { line += "  \(reason)" }
        lock.lock()
        devices.append(r)
        console(line)
        writeJSON(r)
        let hook = onDevice
        lock.unlock()
        hook?(r)
    }

    struct Note: Encodable {
        var at: Date
        var event: String
        var station_id: String
        var fixture: String?
        var message: String
    }

    /// A daemon event (started, stopping, recovered, fixture problems): a console line and a JSON line.
    public func note(_ event: String, fixture: String? = nil, _ message: String) {
        lock.lock()
        defer { lock.unlock() }
        console("----  \(fixture.map { Self.pad($0, 8) + " " } ?? "")\(message)")
        writeJSON(Note(at: Date(), event: event, station_id: stationID, fixture: fixture, message: message))
    }

    /// An alarm the line supervisor must see: refusals spiking, the CA or the ledger failing.
    public func alarm(_ message: String) {
        lock.lock()
        defer { lock.unlock() }
        console((color ? "\u{1B}[1;33mALARM\u{1B}[0m " : "ALARM ") + message)
        writeJSON(Note(at: Date(), event: "alarm", station_id: stationID, fixture: nil, message: message))
    }

    public var passCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return devices.filter(\.passed).count
    }

    public var failCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return devices.filter { !$0.passed }.count
    }
}
