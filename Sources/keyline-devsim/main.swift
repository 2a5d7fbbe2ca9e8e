import ArgumentParser
import Foundation
import KeylineDeviceSim

#if canImport(Glibc)
    import Glibc
#endif

// The pseudo-terminal calls are in libc but not in the Glibc module (they need _XOPEN_SOURCE).
@_silgen_name("posix_openpt") func c_posix_openpt(_ flags: Int32) -> Int32
@_silgen_name("grantpt") func c_grantpt(_ fd: Int32) -> Int32
@_silgen_name("unlockpt") func c_unlockpt(_ fd: Int32) -> Int32
@_silgen_name("ptsname_r") func c_ptsname_r(_ fd: Int32, _ buf: UnsafeMutablePointer<CChar>, _ len: Int) -> Int32

/// Prints a line on standard output at once (the caller waits for it to learn where to connect).
func announce(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

/// A device that speaks Keyline device protocol v1 on a pseudo-terminal or a socket, for demos and tests.
@main
struct DeviceSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyline-devsim",
        abstract: "A simulated device speaking Keyline device protocol v1 (docs/device-protocol.md).",
        discussion: """
            Makes its own P-256 key and CSR (unless --no-keygen), stores what the station sends under \
            DIR/<hardware-id>/ and answers READBACK from what it stored. Serves one connection at a time and keeps \
            its state across them, like a device that stays powered.

            Examples:
              keyline-devsim --hardware-id HW-1 --dir devices --listen unix:/tmp/fixture-1.sock
              keyline-devsim --hardware-id HW-2 --dir devices --pty      # prints the tty path to open
              keyline-devsim --hardware-id HW-3 --listen tcp:7001 --wrong-readback
            """)

    @Option(name: .long, help: "The device's hardware id.") var hardwareId: String
    @Option(name: .long, help: "Model reported by IDENTIFY.") var model = "keyline-devsim"
    @Option(name: .long, help: "Firmware version reported by IDENTIFY.") var firmware = "1.0.0"
    @Option(name: .long, help: ArgumentHelp("Store received certificates under DIR/<hardware-id>/.", valueName: "DIR"))
    var dir: String?
    @Option(name: .long, help: ArgumentHelp("unix:PATH or tcp:PORT (loopback).", valueName: "ADDRESS")) var listen:
        String?
    @Flag(name: .long, help: "Open a pseudo-terminal and print its path (the station opens it as a tty).") var pty =
        false
    @Flag(name: .long, help: "Misbehave: answer with garbage bytes.") var garbage = false
    @Flag(name: .long, help: "Misbehave: a wrong SHA-256 with the CSR.") var wrongChecksum = false
    @Flag(name: .long, help: "Misbehave: never answer.") var silent = false
    @Flag(name: .long, help: "Misbehave: drop the connection when asked to store.") var disconnectMidWrite = false
    @Flag(name: .long, help: "Misbehave: a read-back digest that does not match.") var wrongReadback = false
    @Option(name: .long, help: "Misbehave: ask for this CN in IDENTIFY.") var requestCn: String?
    @Flag(name: .long, help: "A device that cannot make keys (the station must send one).") var noKeygen = false
    @Option(name: .long, help: "Wait this many milliseconds before each answer.") var delayMs = 0
    @Option(
        name: .long,
        help: ArgumentHelp(
            "With --listen: be N devices in turn (hardware ids ID-0001 ... ID-N, keys in memory), each leaving once its certificate was read back; then exit.",
            valueName: "N"))
    var count: Int?

    func validate() throws {
        if (listen == nil) == !pty { throw ValidationError("give exactly one of --listen ADDRESS and --pty") }
        if let count, count < 1 || listen == nil { throw ValidationError("--count N needs --listen and N >= 1") }
    }

    func run() throws {
        var b = DeviceBehaviour()
        b.garbage = garbage
        b.wrongChecksum = wrongChecksum
        b.silent = silent
        b.disconnectMidWrite = disconnectMidWrite
        b.wrongReadback = wrongReadback
        b.requestedCN = requestCn
        b.noKeygen = noKeygen
        b.delayMillis = delayMs
        let device = SimulatedDevice(
            hardwareID: hardwareId, model: model, firmware: firmware, directory: dir, behaviour: b)
        signal(SIGPIPE, SIG_IGN)
        if pty {
            let fd = try openPTY()
            while true {
                if serve(device, fd: fd) == .disconnect {
                    // A pty cannot be "unplugged"; a disconnect ends the simulator, as pulling the device would.
                    close(fd)
                    return
                }
            }
        }
        let server = try listenSocket(listen!)
        if let count {
            // A line of devices: each is served until the station read back its certificate, then leaves.
            for i in 1...count {
                let d = SimulatedDevice(
                    hardwareID: hardwareId + String(format: "-%04d", i), model: model, firmware: firmware,
                    directory: nil, behaviour: b)
                var done = false
                while !done {
                    let client = accept(server, nil, nil)
                    if client < 0 { continue }
                    _ = serve(d, fd: client, until: { d.readBackStored })
                    close(client)
                    done = d.readBackStored
                }
            }
            return
        }
        while true {
            let client = accept(server, nil, nil)
            if client < 0 { continue }
            _ = serve(device, fd: client)
            close(client)
        }
    }

    enum Ending { case closed, disconnect }

    /// Reads requests from `fd` and writes answers until the peer closes or the device drops the connection.
    func serve(_ device: SimulatedDevice, fd: Int32, until finished: () -> Bool = { false }) -> Ending {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                if n < 0 && errno == EIO { usleep(50_000); continue }  // pty with no one on the other side yet
                return .closed
            }
            for output in device.receive(Array(buffer[0..<n])) {
                switch output {
                case .delay(let ms): usleep(useconds_t(ms) * 1000)
                case .disconnect: return .disconnect
                case .send(let bytes):
                    var off = 0
                    while off < bytes.count {
                        let w = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                        if w <= 0 { return .closed }
                        off += w
                    }
                }
            }
            if finished() { return .closed }
        }
    }

    func openPTY() throws -> Int32 {
        let master = c_posix_openpt(O_RDWR | O_NOCTTY)
        var name = [CChar](repeating: 0, count: 128)
        guard master >= 0, c_grantpt(master) == 0, c_unlockpt(master) == 0,
            c_ptsname_r(master, &name, name.count) == 0
        else {
            throw ValidationError("cannot open a pseudo-terminal: \(String(cString: strerror(errno)))")
        }
        var t = termios()
        tcgetattr(master, &t)
        cfmakeraw(&t)
        tcsetattr(master, TCSANOW, &t)
        announce(String(cString: name))
        return master
    }

    func listenSocket(_ address: String) throws -> Int32 {
        if address.hasPrefix("unix:") {
            let path = String(address.dropFirst(5))
            unlink(path)
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
                throw ValidationError("socket path too long: \(path)")
            }
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
                raw[bytes.count] = 0
            }
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard fd >= 0, ok == 0, Glibc.listen(fd, 4) == 0 else {
                throw ValidationError("cannot listen on \(path): \(String(cString: strerror(errno)))")
            }
            announce(path)
            return fd
        }
        if address.hasPrefix("tcp:"), let port = UInt16(address.dropFirst(4)) {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var yes: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard fd >= 0, ok == 0, Glibc.listen(fd, 4) == 0 else {
                throw ValidationError("cannot listen on 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
            }
            announce("127.0.0.1:\(port)")
            return fd
        }
        throw ValidationError("--listen takes unix:PATH or tcp:PORT")
    }
}
