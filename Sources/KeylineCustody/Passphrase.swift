import Foundation
import KeylineCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A passphrase held as bytes and wiped when released. Never printed, logged or put in an error.
public final class Passphrase: @unchecked Sendable, CustomStringConvertible {
    public private(set) var bytes: [UInt8]
    /// Where it came from, for messages ("passphrase file secrets/dev.passphrase"); never the value.
    public let source: String

    public init(bytes: [UInt8], source: String) {
        self.bytes = bytes
        self.source = source
    }

    deinit {
        for i in bytes.indices { bytes[i] = 0 }
    }

    public var description: String { "<passphrase from \(source)>" }

    /// Calls `body` with the passphrase as a NUL-terminated C string; the copy is wiped afterwards.
    public func withCString<T>(_ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
        var copy = bytes.map { CChar(bitPattern: $0) } + [0]
        defer { for i in copy.indices { copy[i] = 0 } }
        return try copy.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }
}

/// Where a CA key's passphrase may come from, in the order they are tried: an explicit `--passphrase-file`, the
/// file `station.toml` names, the systemd credential `$CREDENTIALS_DIRECTORY/keyline-ca-passphrase-NAME` (for CA
/// NAME) or `keyline-ca-passphrase`, a prompt when standard input is a terminal. Never argv, never an environment variable's value.
public struct PassphraseSources: Sendable {
    /// The systemd credential's name.
    public static let credentialName = "keyline-ca-passphrase"

    public var explicitFile: String?
    public var configuredFile: String?
    public var credentialsDirectory: String?
    public var allowPrompt: Bool
    /// The CA the passphrase is for: its own credential `keyline-ca-passphrase-NAME` is tried before the shared one,
    /// so several CAs (a rotation, one per tenant) can each have theirs.
    public var caName: String?

    public init(
        explicitFile: String? = nil, configuredFile: String? = nil, credentialsDirectory: String? = nil,
        allowPrompt: Bool = false, caName: String? = nil
    ) {
        self.explicitFile = explicitFile
        self.configuredFile = configuredFile
        self.credentialsDirectory = credentialsDirectory
        self.allowPrompt = allowPrompt
        self.caName = caName
    }

    /// Resolves the passphrase for `keyPath`; throws ``KeylineError/Code/keyGuard`` when no source has one.
    public func resolve(for keyPath: String) throws -> Passphrase {
        if let file = explicitFile { return try Self.read(file) }
        if let file = configuredFile { return try Self.read(file) }
        if let dir = credentialsDirectory, !dir.isEmpty {
            let names = (caName.map { ["\(Self.credentialName)-\($0)"] } ?? []) + [Self.credentialName]
            for name in names {
                let path = (dir as NSString).appendingPathComponent(name)
                if FileManager.default.fileExists(atPath: path) {
                    return try Self.read(path, what: "systemd credential", allowGroupRead: true)
                }
            }
        }
        if allowPrompt, isatty(STDIN_FILENO) == 1, let typed = Self.prompt("Passphrase for \(keyPath): ") {
            return Passphrase(bytes: typed, source: "terminal prompt")
        }
        throw KeylineError(
            .keyGuard,
            "no passphrase for encrypted key \(keyPath): pass --passphrase-file, set passphrase_file in station.toml, or provide the systemd credential \(caName.map { "\(Self.credentialName)-\($0) or " } ?? "")\(Self.credentialName)"
        )
    }

    /// Reads a guarded passphrase file; strips one trailing newline.
    public static func read(
        _ path: String, what: String = "passphrase file", allowGroupRead: Bool = false
    ) throws -> Passphrase {
        var bytes = try FileGuard.readSecretFile(path, what: what, allowGroupRead: allowGroupRead)
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard !bytes.isEmpty else { throw KeylineError(.keyGuard, "\(what) \(path) is empty") }
        return Passphrase(bytes: bytes, source: "\(what) \(path)")
    }

    /// Reads a line from the terminal with echo off.
    static func prompt(_ text: String) -> [UInt8]? {
        let fd = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        _ = text.withCString { write(fd, $0, strlen($0)) }
        var old = termios()
        let haveTermios = tcgetattr(fd, &old) == 0
        if haveTermios {
            var noEcho = old
            noEcho.c_lflag &= ~tcflag_t(ECHO)
            _ = tcsetattr(fd, TCSAFLUSH, &noEcho)
        }
        defer {
            if haveTermios { _ = tcsetattr(fd, TCSAFLUSH, &old) }
            _ = write(fd, "\n", 1)
        }
        var out: [UInt8] = []
        var c: UInt8 = 0
        while Glibc.read(fd, &c, 1) == 1 {
            if c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") { break }
            out.append(c)
        }
        return out.isEmpty ? nil : out
    }

    /// Makes a random passphrase of `length` characters from an unambiguous alphabet (for `keyline init`).
    public static func generate(length: Int = 32) -> [UInt8] {
        let alphabet = Array("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789".utf8)
        var rng = SystemRandomNumberGenerator()
        return (0..<length).map { _ in alphabet[Int(rng.next(upperBound: UInt64(alphabet.count)))] }
    }
}
