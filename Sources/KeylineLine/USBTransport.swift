import CLibUSB
import Foundation
import KeylineCore

/// Devices with a vendor-specific interface and a bulk IN/OUT endpoint pair, through libusb-1.0, matched by
/// vendor id, product id and interface number. Found by hotplug (`libusb_hotplug_register_callback`) where the
/// platform supports it, else by enumerating once a second.
public final class USBTransport: DeviceTransport, @unchecked Sendable {
    public let vendorID: UInt16
    public let productID: UInt16
    public let interface: Int32
    /// Where arrivals and departures are reported (the daemon's console and JSON log).
    public var log: (@Sendable (String) -> Void)?

    let lock = NSLock()
    var context: OpaquePointer?
    var callback: libusb_hotplug_callback_handle = 0
    var hotplug = false
    var arrivals = 1  // scan once at start
    var lastScan = Date.distantPast
    var eventThread: Thread?
    var running = true

    public var description: String { String(format: "usb %04x:%04x interface %d", vendorID, productID, interface) }

    public init(vendorID: UInt16, productID: UInt16, interface: Int) throws {
        self.vendorID = vendorID
        self.productID = productID
        self.interface = Int32(interface)
        var ctx: OpaquePointer?
        let r = libusb_init(&ctx)
        guard r == 0, let ctx else {
            throw KeylineError(.unavailable, "libusb cannot start: \(Self.errorName(r)) (is there a USB stack?)")
        }
        context = ctx
        hotplug = libusb_has_capability(UInt32(LIBUSB_CAP_HAS_HOTPLUG.rawValue)) != 0
        if hotplug {
            let me = Unmanaged.passUnretained(self).toOpaque()
            let rc = libusb_hotplug_register_callback(
                ctx,
                Int32(LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED.rawValue | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT.rawValue),
                0, Int32(vendorID), Int32(productID), LIBUSB_HOTPLUG_MATCH_ANY,
                { _, device, event, user in
                    guard let user else { return 0 }
                    Unmanaged<USBTransport>.fromOpaque(user).takeUnretainedValue().hotplugEvent(device, event)
                    return 0
                }, me, &callback)
            if rc != 0 { hotplug = false }
        }
        if hotplug {
            let t = Thread { [unowned self] in
                var tv = timeval(tv_sec: 0, tv_usec: 250_000)
                while self.isRunning { libusb_handle_events_timeout_completed(self.context, &tv, nil) }
            }
            t.name = "keyline-usb-events"
            eventThread = t
            t.start()
        }
    }

    var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        return running
    }

    /// Stops the event thread (the context itself lives as long as the process).
    public func shutdown() {
        lock.lock()
        running = false
        lock.unlock()
        if hotplug, let context { libusb_hotplug_deregister_callback(context, callback) }
    }

    static func errorName(_ code: Int32) -> String { String(cString: libusb_error_name(code)) }

    static func where_(_ device: OpaquePointer?) -> String {
        "bus \(libusb_get_bus_number(device)) address \(libusb_get_device_address(device))"
    }

    /// Devices (as `bus N address M`) that hotplug reported gone: a link to one of them reads as closed.
    var departed: Set<String> = []

    func hasLeft(_ place: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return departed.contains(place)
    }

    func hotplugEvent(_ device: OpaquePointer?, _ event: libusb_hotplug_event) {
        let arrived = event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED
        lock.lock()
        if arrived {
            arrivals += 1
            departed.remove(Self.where_(device))
        } else {
            departed.insert(Self.where_(device))
        }
        lock.unlock()
        log?(
            String(format: "usb %04x:%04x ", vendorID, productID) + (arrived ? "arrived" : "left") + " on "
                + Self.where_(device) + " (hotplug)")
    }

    /// Whether to enumerate now: after a hotplug arrival, else once a second (and every 5 s even with hotplug,
    /// for a device whose first open failed).
    func shouldScan() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        let interval: TimeInterval = hotplug ? 5 : 1
        if arrivals > 0 || Date().timeIntervalSince(lastScan) >= interval {
            arrivals = 0
            lastScan = Date()
            return true
        }
        return false
    }

    public func open() throws -> DeviceLink? {
        guard shouldScan() else { return nil }
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let n = libusb_get_device_list(context, &list)
        guard n >= 0, let list else { return nil }
        defer { libusb_free_device_list(list, 1) }
        for i in 0..<n {
            let dev = list[i]
            var d = libusb_device_descriptor()
            guard libusb_get_device_descriptor(dev, &d) == 0, d.idVendor == vendorID, d.idProduct == productID
            else { continue }
            guard let (inEP, outEP) = endpoints(dev) else {
                throw LinkError(
                    description:
                        "\(description) on \(Self.where_(dev)) has no interface \(interface) with bulk IN and OUT endpoints"
                )
            }
            var handle: OpaquePointer?
            let r = libusb_open(dev, &handle)
            if r == LIBUSB_ERROR_ACCESS.rawValue {
                throw LinkError(
                    description:
                        "no permission to open \(description) on \(Self.where_(dev)); install Station/udev/70-keyline.rules and re-plug"
                )
            }
            guard r == 0, let handle else {
                throw LinkError(description: "cannot open \(description) on \(Self.where_(dev)): \(Self.errorName(r))")
            }
            _ = libusb_set_auto_detach_kernel_driver(handle, 1)
            let c = libusb_claim_interface(handle, interface)
            if c == LIBUSB_ERROR_BUSY.rawValue {
                libusb_close(handle)
                continue  // another fixture (or program) has it
            }
            guard c == 0 else {
                libusb_close(handle)
                throw LinkError(
                    description:
                        "cannot claim interface \(interface) of \(description) on \(Self.where_(dev)): \(Self.errorName(c))"
                )
            }
            return USBLink(
                handle: handle, interface: interface, inEndpoint: inEP, outEndpoint: outEP, transport: self,
                place: Self.where_(dev))
        }
        return nil
    }

    /// The first bulk IN and bulk OUT endpoint addresses of the configured interface (alternate setting 0).
    func endpoints(_ dev: OpaquePointer?) -> (UInt8, UInt8)? {
        var config: UnsafeMutablePointer<libusb_config_descriptor>?
        guard
            libusb_get_active_config_descriptor(dev, &config) == 0
                || libusb_get_config_descriptor(dev, 0, &config) == 0,
            let config
        else { return nil }
        defer { libusb_free_config_descriptor(config) }
        for i in 0..<Int(config.pointee.bNumInterfaces) {
            let itf = config.pointee.interface[i]
            guard itf.num_altsetting > 0 else { continue }
            let alt = itf.altsetting[0]
            guard Int32(alt.bInterfaceNumber) == interface else { continue }
            var inEP: UInt8?
            var outEP: UInt8?
            for e in 0..<Int(alt.bNumEndpoints) {
                let ep = alt.endpoint[e]
                guard ep.bmAttributes & 0x03 == UInt8(LIBUSB_TRANSFER_TYPE_BULK.rawValue) else { continue }
                if ep.bEndpointAddress & 0x80 != 0 {
                    inEP = inEP ?? ep.bEndpointAddress
                } else {
                    outEP = outEP ?? ep.bEndpointAddress
                }
            }
            if let inEP, let outEP { return (inEP, outEP) }
        }
        return nil
    }
}

/// A claimed interface's bulk endpoint pair.
final class USBLink: DeviceLink {
    var handle: OpaquePointer?
    let interface: Int32
    let inEndpoint: UInt8
    let outEndpoint: UInt8

    /// Where the device is (`bus N address M`), and who hears of its departure by hotplug.
    let place: String
    weak var transport: USBTransport?

    init(
        handle: OpaquePointer, interface: Int32, inEndpoint: UInt8, outEndpoint: UInt8, transport: USBTransport,
        place: String
    ) {
        self.place = place
        self.transport = transport
        self.handle = handle
        self.interface = interface
        self.inEndpoint = inEndpoint
        self.outEndpoint = outEndpoint
    }

    deinit { close() }

    func write(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            guard let handle else { throw LinkError(description: "the device is closed") }
            var chunk = Array(bytes[off..<min(bytes.count, off + 16384)])
            var sent: Int32 = 0
            let r = libusb_bulk_transfer(handle, outEndpoint, &chunk, Int32(chunk.count), &sent, 2000)
            guard r == 0 || (r == LIBUSB_ERROR_TIMEOUT.rawValue && sent > 0) else {
                throw LinkError(description: "bulk OUT failed: \(USBTransport.errorName(r))")
            }
            off += Int(sent)
        }
    }

    func read(timeout: Double) -> LinkRead {
        guard let handle, transport?.hasLeft(place) != true else { return .closed }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var got: Int32 = 0
        let r = libusb_bulk_transfer(
            handle, inEndpoint, &buffer, Int32(buffer.count), &got, UInt32(max(1, timeout * 1000)))
        if got > 0 { return .data(Array(buffer[0..<Int(got)])) }
        if r == LIBUSB_ERROR_TIMEOUT.rawValue { return .timeout }
        return .closed  // NO_DEVICE when pulled, PIPE, IO
    }

    func close() {
        guard let h = handle else { return }
        libusb_release_interface(h, interface)
        libusb_close(h)
        handle = nil
    }
}
