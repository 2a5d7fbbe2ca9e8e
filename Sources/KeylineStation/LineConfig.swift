import Foundation
import KeylineCore

/// How a fixture reaches its device.
public enum FixtureTransport: Sendable, Equatable, CustomStringConvertible {
    /// A USB-serial or CDC-ACM tty (or a pseudo-terminal), opened raw at `baud`.
    case tty(path: String, baud: Int)
    /// A Unix socket (`unix:PATH`) or TCP (`tcp:HOST:PORT`) the device or its fixture listens on.
    case socket(address: String)
    /// A USB device with a vendor-specific interface and bulk IN/OUT endpoints, matched by ids (libusb-1.0).
    case usb(vendorID: UInt16, productID: UInt16, interface: Int)

    public var description: String {
        switch self {
        case .tty(let path, let baud): "tty \(path) @\(baud)"
        case .socket(let address): "socket \(address)"
        case .usb(let v, let p, let i): String(format: "usb %04x:%04x interface %d", v, p, i)
        }
    }
}

/// One `[fixtures.NAME]` section: a place on the line where devices are plugged in, one at a time.
public struct FixtureConfig: Sendable, Equatable {
    public var name: String
    public var transport: FixtureTransport
    /// The profile devices on this fixture are issued under.
    public var profile: String

    public init(name: String, transport: FixtureTransport, profile: String) {
        self.name = name
        self.transport = transport
        self.profile = profile
    }

    /// The baud rates a tty fixture may ask for (what termios offers).
    public static let baudRates = [9600, 19200, 38400, 57600, 115_200, 230_400, 460_800, 921_600]

    static func parse(
        _ s: inout Section, name: String, directory: String, profiles: [String: Profile]
    ) throws -> FixtureConfig {
        let table = "\(StationConfig.fileName): [fixtures.\(name)]"
        guard name.range(of: "^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", options: .regularExpression) != nil else {
            throw KeylineError(
                .configuration,
                "\(table): a fixture name is 1-32 letters, digits, '.', '_' or '-' (it is shown on every console line)")
        }
        let profile = try s.string("profile") ?? "default"
        guard profiles[profile] != nil else {
            throw KeylineError(
                .configuration,
                "\(table) profile = '\(profile)' has no [profiles.\(profile)] section (profiles: \(profiles.keys.sorted().joined(separator: ", ")))"
            )
        }
        let kind = try s.requiredString("transport")
        let transport: FixtureTransport
        switch kind {
        case "tty":
            let path = StationConfig.resolve(try s.requiredString("path"), in: directory)
            let baud = try s.int("baud") ?? 115_200
            guard baudRates.contains(baud) else {
                throw KeylineError(
                    .configuration,
                    "\(table) baud \(baud) is not one of \(baudRates.map(String.init).joined(separator: ", "))")
            }
            transport = .tty(path: path, baud: baud)
        case "socket":
            let address = try s.requiredString("address")
            if address.hasPrefix("unix:"), address.count > 5 {
                transport = .socket(
                    address: "unix:" + StationConfig.resolve(String(address.dropFirst(5)), in: directory))
            } else if address.hasPrefix("tcp:"), let (host, _) = Self.tcpHostPort(address) {
                var probe = in_addr()
                guard host == "localhost" || inet_pton(AF_INET, host, &probe) == 1 else {
                    throw KeylineError(
                        .configuration, "\(table) address '\(address)': the host must be an IPv4 address or localhost")
                }
                transport = .socket(address: address)
            } else {
                throw KeylineError(
                    .configuration, "\(table) address '\(address)' must be unix:PATH or tcp:HOST:PORT")
            }
        case "usb":
            func id(_ key: String) throws -> UInt16 {
                guard let text = try s.string(key) else {
                    throw KeylineError(.configuration, "\(table) is missing '\(key)' (four hex digits, e.g. \"1209\")")
                }
                let digits = text.lowercased().hasPrefix("0x") ? String(text.dropFirst(2)) : text
                guard digits.count == 4, let v = UInt16(digits, radix: 16) else {
                    throw KeylineError(
                        .configuration, "\(table) \(key) '\(text)' must be four hex digits, e.g. \"1209\"")
                }
                return v
            }
            let vendor = try id("vendor_id")
            let product = try id("product_id")
            let interface = try s.int("interface") ?? 0
            guard (0...255).contains(interface) else {
                throw KeylineError(.configuration, "\(table) interface must be 0-255")
            }
            transport = .usb(vendorID: vendor, productID: product, interface: interface)
        default:
            throw KeylineError(.configuration, "\(table) transport '\(kind)' must be \"tty\", \"socket\" or \"usb\"")
        }
        return FixtureConfig(name: name, transport: transport, profile: profile)
    }

    /// Splits `tcp:HOST:PORT` (HOST may be empty for loopback).
    public static func tcpHostPort(_ address: String) -> (host: String, port: UInt16)? {
        guard address.hasPrefix("tcp:") else { return nil }
        let rest = address.dropFirst(4)
        guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]), port > 0
        else { return nil }
        let host = String(rest[..<colon])
        return (host.isEmpty ? "127.0.0.1" : host, port)
    }
}

/// The `[daemon]` section: how `keyline run` treats devices and reports.
public struct DaemonSettings: Sendable, Equatable {
    /// Seconds to wait for a device's answer (docs/device-protocol.md); CSRs and stores may take longer.
    public var responseTimeout = 5.0
    public var csrTimeout = 30.0
    public var storeTimeout = 15.0
    /// How often a request that is safe to repeat is sent again.
    public var retries = 3
    /// Send LOCK after a matching read-back.
    public var lock = false
    /// The station-wide token bucket: at most `ratePerMinute` issuances a minute, `rateBurst` at once (nil: off).
    public var ratePerMinute: Double?
    public var rateBurst: Int?
    /// An ALARM line when `alarmRefusals` refusals happen within `alarmWindow` seconds.
    public var alarmRefusals = 5
    public var alarmWindow = 60.0
    /// Structured JSON lines for the line's MES, one per device and per daemon event (default `run/devices.jsonl`
    /// in the station directory).
    public var logPath: String?
    /// Seconds a fixture waits after a failed device before speaking to what is plugged in next.
    public var failCooldown = 1.0

    public init() {}

    static func parse(_ s: inout Section, directory: String) throws -> DaemonSettings {
        let table = "\(StationConfig.fileName): [daemon]"
        var d = DaemonSettings()
        func seconds(_ key: String, _ value: inout Double) throws {
            if let v = try s.number(key) {
                guard v > 0, v <= 3600 else {
                    throw KeylineError(.configuration, "\(table) \(key) must be between 0 and 3600 seconds")
                }
                value = v
            }
        }
        try seconds("response_timeout", &d.responseTimeout)
        try seconds("csr_timeout", &d.csrTimeout)
        try seconds("store_timeout", &d.storeTimeout)
        try seconds("alarm_window", &d.alarmWindow)
        if let c = try s.number("fail_cooldown") {
            guard c >= 0, c <= 3600 else {
                throw KeylineError(.configuration, "\(table) fail_cooldown must be between 0 and 3600 seconds")
            }
            d.failCooldown = c
        }
        if let r = try s.int("retries") {
            guard (0...10).contains(r) else { throw KeylineError(.configuration, "\(table) retries must be 0-10") }
            d.retries = r
        }
        d.lock = try s.bool("lock") ?? false
        if let r = try s.number("rate_per_minute") {
            guard r > 0 else { throw KeylineError(.configuration, "\(table) rate_per_minute must be > 0") }
            d.ratePerMinute = r
        }
        if let b = try s.int("rate_burst") {
            guard b >= 1 else { throw KeylineError(.configuration, "\(table) rate_burst must be >= 1") }
            d.rateBurst = b
        }
        if let a = try s.int("alarm_refusals") {
            guard a >= 1 else { throw KeylineError(.configuration, "\(table) alarm_refusals must be >= 1") }
            d.alarmRefusals = a
        }
        d.logPath = try s.string("log").map { StationConfig.resolve($0, in: directory) }
        return d
    }
}
