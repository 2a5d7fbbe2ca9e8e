import Foundation
import KeylineCore
import KeylineStation

#if canImport(Glibc)
    import Glibc
#endif

// ioctl is variadic in C; its integer form is all the tty code needs.
@_silgen_name("ioctl") func c_ioctl(_ fd: Int32, _ request: UInt, _ arg: Int) -> Int32

/// What a read from a device brought.
public enum LinkRead: Sendable, Equatable {
    case data([UInt8])
    case timeout
    /// The device went away: end of file, a hang-up, an I/O error (pulled from its fixture).
    case closed
}

/// A byte stream to one device on a fixture. Calls block the fixture's own thread, never the async pool.
public protocol DeviceLink: AnyObject {
    func write(_ bytes: [UInt8]) throws
    /// Waits up to `timeout` seconds for bytes.
    func read(timeout: Double) -> LinkRead
    func close()
}

/// How a fixture finds its device: `open()` returns a link when a device is there, nil when none is (yet).
/// It throws only for a problem the operator must fix (permissions, a bad address), reported once.
public protocol DeviceTransport: Sendable {
    var description: String { get }
    func open() throws -> DeviceLink?
}

struct LinkError: Error, CustomStringConvertible {
    var description: String
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// A link over a file descriptor (a tty or a socket), non-blocking with poll(2) for timeouts.
public final class FDLink: DeviceLink {
    var fd: Int32

    public init(fd: Int32) {
        self.fd = fd
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    deinit { close() }

    public func write(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            guard fd >= 0 else { throw LinkError(description: "the link is closed") }
            let n = bytes[off...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                off += n
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EINTR) {
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                guard poll(&p, 1, 2000) > 0, p.revents & Int16(POLLOUT) != 0 else {
                    throw LinkError(description: "the device stopped accepting bytes")
                }
                continue
            }
            throw LinkError(description: "write to the device failed: \(errnoText())")
        }
    }

    public func read(timeout: Double) -> LinkRead {
        guard fd >= 0 else { return .closed }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let ms = max(0, Int32(deadline.timeIntervalSinceNow * 1000))
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, ms)
            if r < 0 && errno == EINTR { continue }
            if r == 0 { return .timeout }
            if r < 0 { return .closed }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n > 0 { return .data(Array(buffer[0..<n])) }
            if n < 0 && (errno == EAGAIN || errno == EINTR) {
                if deadline.timeIntervalSinceNow <= 0 { return .timeout }
                continue
            }
            return .closed  // 0: end of file; EIO: a tty whose other side went away
        }
    }

    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}

/// A USB-serial or CDC-ACM tty (or a pseudo-terminal): raw 8N1 at the configured baud, opened exclusively.
public struct TTYTransport: DeviceTransport {
    public let path: String
    public let baud: Int

    public init(path: String, baud: Int) {
        self.path = path
        self.baud = baud
    }

    public var description: String { "tty \(path) @\(baud)" }

    static func speed(_ baud: Int) -> speed_t {
        switch baud {
        case 9600: speed_t(B9600)
        case 19200: speed_t(B19200)
        case 38400: speed_t(B38400)
        case 57600: speed_t(B57600)
        case 230_400: speed_t(B230400)
        case 460_800: speed_t(B460800)
        case 921_600: speed_t(B921600)
        default: speed_t(B115200)
        }
    }

    public func open() throws -> DeviceLink? {
        let fd = Glibc.open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            switch errno {
            case ENOENT, ENXIO, ENODEV, EIO: return nil  // nothing plugged in (yet)
            case EBUSY: return nil  // someone else has it open exclusively; try again
            default: throw LinkError(description: "cannot open \(path): \(errnoText())")
            }
        }
        var t = termios()
        guard tcgetattr(fd, &t) == 0 else {
            let why = errnoText()
            Glibc.close(fd)
            throw LinkError(description: "\(path) is not a tty: \(why)")
        }
        cfmakeraw(&t)
        t.c_cflag |= tcflag_t(CLOCAL | CREAD)
        t.c_cflag &= ~(tcflag_t(CSTOPB) | tcflag_t(CRTSCTS))
        cfsetispeed(&t, Self.speed(baud))
        cfsetospeed(&t, Self.speed(baud))
        _ = tcsetattr(fd, TCSANOW, &t)
        _ = c_ioctl(fd, UInt(TIOCEXCL), 0)  // no second opener (a terminal program) while the station talks
        _ = tcflush(fd, TCIOFLUSH)
        return FDLink(fd: fd)
    }
}

/// A device (or a networked fixture, or a simulator) listening on a Unix socket or TCP; the station connects.
public struct SocketTransport: DeviceTransport {
    public let address: String

    public init(address: String) { self.address = address }

    public var description: String { "socket \(address)" }

    public func open() throws -> DeviceLink? {
        if address.hasPrefix("unix:") {
            let path = String(address.dropFirst(5))
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
                throw LinkError(description: "socket path too long: \(path)")
            }
            withUnsafeMutableBytes(of: &addr.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
                raw[bytes.count] = 0
            }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw LinkError(description: "socket: \(errnoText())") }
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if r != 0 {
                let e = errno
                Glibc.close(fd)
                if e == ENOENT || e == ECONNREFUSED || e == EAGAIN { return nil }
                throw LinkError(description: "cannot connect to \(path): \(String(cString: strerror(e)))")
            }
            return FDLink(fd: fd)
        }
        guard let (host, port) = FixtureConfig.tcpHostPort(address) else {
            throw LinkError(description: "address '\(address)' is not unix:PATH or tcp:HOST:PORT")
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr) == 1 else {
            throw LinkError(description: "tcp host '\(host)' must be an IPv4 address or localhost")
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw LinkError(description: "socket: \(errnoText())") }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if r != 0 && errno == EINPROGRESS {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            if poll(&p, 1, 1000) == 1, getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0, err == 0 {
                return FDLink(fd: fd)
            }
        } else if r == 0 {
            return FDLink(fd: fd)
        }
        Glibc.close(fd)
        return nil
    }
}
