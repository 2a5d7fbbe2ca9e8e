import Crypto
import Foundation
import Testing
import X509
import _CryptoExtras

@testable import KeylineCore
@testable import KeylineCustody

/// A private temporary directory (mode 0700) removed by the caller.
func tempDir() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keyline-custody-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(
        atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    return dir
}

func writeFile(_ path: String, _ text: String, mode: Int) throws {
    FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
    try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
}

func run(_ args: [String]) throws -> Int32 {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    return p.terminationStatus
}

@Suite("File guard")
struct FileGuardTests {
    @Test("accepts a 0600 regular file in a private directory")
    func accepts() throws {
        let dir = try tempDir()
        try writeFile("\(dir)/k", "x", mode: 0o600)
        try FileGuard.checkSecretFile("\(dir)/k", what: "CA key")
        try writeFile("\(dir)/r", "x", mode: 0o400)
        try FileGuard.checkSecretFile("\(dir)/r", what: "CA key")
    }

    @Test(
        "refuses group- or world-accessible files, naming the path and the fix",
        arguments: [0o640, 0o604, 0o660, 0o644, 0o602])
    func modes(_ mode: Int) throws {
        let dir = try tempDir()
        try writeFile("\(dir)/k", "x", mode: mode)
        do {
            try FileGuard.checkSecretFile("\(dir)/k", what: "CA key")
            Issue.record("mode \(String(mode, radix: 8)) accepted")
        } catch let e as KeylineError {
            #expect(e.code == .keyGuard)
            #expect(e.exitStatus == 77)
            #expect(e.reason.contains("\(dir)/k"))
            #expect(e.reason.contains("chmod 600"))
        }
    }

    @Test("refuses a symlink even to a good file")
    func symlink() throws {
        let dir = try tempDir()
        try writeFile("\(dir)/real", "x", mode: 0o600)
        try FileManager.default.createSymbolicLink(atPath: "\(dir)/link", withDestinationPath: "\(dir)/real")
        #expect(throws: KeylineError(.keyGuard, "")) { try FileGuard.checkSecretFile("\(dir)/link", what: "CA key") }
    }

    @Test("refuses a directory, a missing file and a file in a group-writable directory")
    func others() throws {
        let dir = try tempDir()
        #expect(throws: KeylineError(.keyGuard, "")) { try FileGuard.checkSecretFile(dir, what: "CA key") }
        #expect(throws: KeylineError(.keyGuard, "")) { try FileGuard.checkSecretFile("\(dir)/missing", what: "CA key") }
        let open = "\(dir)/open"
        try FileManager.default.createDirectory(
            atPath: open, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o770])
        try FileManager.default.setAttributes([.posixPermissions: 0o770], ofItemAtPath: open)
        try writeFile("\(open)/k", "x", mode: 0o600)
        #expect(throws: KeylineError(.keyGuard, "")) { try FileGuard.checkSecretFile("\(open)/k", what: "CA key") }
    }

    @Test("refuses a file owned by another non-root user")
    func owner() throws {
        guard geteuid() == 0 else { return }  // only root can give a file away; CI runs as root
        let dir = try tempDir()
        try writeFile("\(dir)/k", "x", mode: 0o600)
        #expect(chown("\(dir)/k", 4321, 4321) == 0)
        // root reading a file owned by uid 4321: the owner is neither the current user (0) nor root.
        #expect(throws: KeylineError(.keyGuard, "")) { try FileGuard.checkSecretFile("\(dir)/k", what: "CA key") }
    }
}

@Suite("Safe file writes")
struct SafeFileTests {
    @Test("writes with the requested mode, replaces atomically, refuses to overwrite when exclusive")
    func writes() throws {
        let dir = try tempDir()
        let path = "\(dir)/f"
        try SafeFile.write("one", to: path, mode: 0o600)
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        try SafeFile.write("two", to: path, mode: 0o600)
        #expect(String(decoding: FileManager.default.contents(atPath: path)!, as: UTF8.self) == "two")
        #expect(throws: KeylineError(.ioError, "")) { try SafeFile.write("three", to: path, exclusive: true) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["f"], "no temporary file left behind")
    }

    @Test(
        "writeInPlace gives a new file exactly its mode, also one the umask would narrow, and an old file its new mode")
    func inPlaceModes() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func mode(_ path: String) -> mode_t {
            var st = stat()
            _ = stat(path, &st)
            return st.st_mode & 0o777
        }
        // 0666 loses group and other write under the usual umask (022): fchmod must still give 0666.
        for wanted: mode_t in [0o600, 0o644, 0o640, 0o666] {
            let path = "\(dir)/new-\(String(wanted, radix: 8))"
            try SafeFile.writeInPlace(Array("k".utf8), to: path, mode: wanted)
            #expect(mode(path) == wanted, "new file asked \(String(wanted, radix: 8))")
        }
        // A file that was there keeps no trace of its old mode or content.
        let old = "\(dir)/old"
        try writeFile(old, "a longer old content", mode: 0o644)
        try SafeFile.writeInPlace(Array("new".utf8), to: old, mode: 0o600)
        #expect(mode(old) == 0o600)
        #expect(FileManager.default.contents(atPath: old) == Data("new".utf8))
        #expect(throws: KeylineError.self) { try SafeFile.writeInPlace([1], to: "\(dir)/missing/f") }
    }

    @Test("writeInPlace refuses to write through a symbolic link (dangling or not) or into a FIFO")
    func inPlaceRefusesLinks() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let target = "\(dir)/elsewhere"
        try writeFile(target, "untouched", mode: 0o644)
        #expect(symlink(target, "\(dir)/link.key.partial") == 0)
        #expect {
            try SafeFile.writeInPlace(Array("secret".utf8), to: "\(dir)/link.key.partial", mode: 0o600)
        } throws: {
            ($0 as? KeylineError)?.reason == "\(dir)/link.key.partial is a symbolic link; refusing to write through it"
        }
        #expect(FileManager.default.contents(atPath: target) == Data("untouched".utf8))
        #expect(symlink("\(dir)/nowhere", "\(dir)/dangling.pem") == 0)
        #expect(throws: KeylineError.self) { try SafeFile.writeInPlace([1], to: "\(dir)/dangling.pem") }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/nowhere"), "the link's target must not be created")
        #expect(mkfifo("\(dir)/fifo.pem", 0o644) == 0)
        #expect {
            try SafeFile.writeInPlace([1], to: "\(dir)/fifo.pem")
        } throws: {
            ($0 as? KeylineError)?.reason == "\(dir)/fifo.pem is not a regular file; refusing to write it"
        }
    }

    @Test("the umask read from /proc/self/status is the process's, as a shell it starts reports it")
    func umask() throws {
        let p = Process()
        let pipe = Pipe()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "umask"]
        p.standardOutput = pipe
        try p.run()
        p.waitUntilExit()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let shell = try #require(mode_t(text.trimmingCharacters(in: .whitespacesAndNewlines), radix: 8))
        #expect(SafeFile.processUmask == shell)
        #expect(SafeFile.umaskKeeps(0o600) == (shell & 0o600 == 0))
        #expect(SafeFile.umaskKeeps(0o777) == (shell == 0))
    }

    @Test("an unwritable place is an I/O error")
    func unwritable() {
        #expect(throws: KeylineError(.ioError, "")) { try SafeFile.write("x", to: "/proc/keyline-cannot-write") }
    }
}

@Suite("Private key files (libcrypto)")
struct PrivateKeyFileTests {
    let pass = Passphrase(bytes: Array("correct horse".utf8), source: "test")

    @Test("encrypts as PBES2/PBKDF2-SHA256/AES-256-CBC and opens again with the passphrase")
    func roundTrip() throws {
        for key in [
            Certificate.PrivateKey(P256.Signing.PrivateKey()), Certificate.PrivateKey(P384.Signing.PrivateKey()),
            Certificate.PrivateKey(try _RSA.Signing.PrivateKey(keySize: .bits2048)),
        ] {
            let pem = try PrivateKeyFile.encryptedPEM(pkcs8: try key.pkcs8DER, passphrase: pass)
            #expect(PrivateKeyFile.protection(of: pem) == .encryptedPKCS8)
            let opened = try PrivateKeyFile.open(pem: pem, passphrase: pass, path: "k.pem")
            #expect(opened.publicKey == key.publicKey)
        }
    }

    @Test("openssl reads our encrypted key and reports the algorithms we promise")
    func opensslAgrees() throws {
        let dir = try tempDir()
        let pem = try PrivateKeyFile.encryptedPEM(
            pkcs8: try Certificate.PrivateKey(P256.Signing.PrivateKey()).pkcs8DER, passphrase: pass)
        try writeFile("\(dir)/k.pem", String(decoding: pem, as: UTF8.self), mode: 0o600)
        try writeFile("\(dir)/pass", "correct horse\n", mode: 0o600)
        #expect(try run(["openssl", "pkey", "-in", "\(dir)/k.pem", "-passin", "file:\(dir)/pass", "-noout"]) == 0)
        let p = Process()
        let out = Pipe()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl", "asn1parse", "-in", "\(dir)/k.pem"]
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(
            text.contains(":PBES2") && text.contains(":PBKDF2") && text.contains(":hmacWithSHA256")
                && text.contains(":aes-256-cbc"))
    }

    @Test("a wrong passphrase is a key-guard refusal that does not echo the passphrase")
    func wrongPassphrase() throws {
        let pem = try PrivateKeyFile.encryptedPEM(
            pkcs8: try Certificate.PrivateKey(P256.Signing.PrivateKey()).pkcs8DER, passphrase: pass)
        let wrong = Passphrase(bytes: Array("tr0ub4dor".utf8), source: "test")
        do {
            _ = try PrivateKeyFile.open(pem: pem, passphrase: wrong, path: "k.pem")
            Issue.record("opened with a wrong passphrase")
        } catch let e as KeylineError {
            #expect(e.code == .keyGuard)
            #expect(!e.reason.contains("tr0ub4dor"))
            #expect(e.reason.contains("wrong passphrase"))
        }
    }

    @Test("opens what openssl writes: legacy encrypted PEM, scrypt PKCS#8, SEC1 with EC PARAMETERS")
    func opensslFormats() throws {
        let dir = try tempDir()
        try writeFile("\(dir)/pass", "correct horse\n", mode: 0o600)
        #expect(try run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-out", "\(dir)/sec1.pem"]) == 0)
        #expect(
            try run([
                "openssl", "ec", "-in", "\(dir)/sec1.pem", "-aes256", "-passout", "file:\(dir)/pass", "-out",
                "\(dir)/legacy.pem",
            ]) == 0)
        #expect(
            try run([
                "openssl", "pkcs8", "-topk8", "-scrypt", "-in", "\(dir)/sec1.pem", "-passout", "file:\(dir)/pass",
                "-out", "\(dir)/scrypt.pem",
            ]) == 0)
        let sec1 = Array(FileManager.default.contents(atPath: "\(dir)/sec1.pem")!)
        #expect(String(decoding: sec1, as: UTF8.self).contains("EC PARAMETERS"))
        let reference = try PrivateKeyFile.open(pem: sec1, passphrase: nil, path: "sec1.pem")
        for (file, protection) in [
            ("legacy.pem", PrivateKeyFile.Protection.legacyEncryptedPEM), ("scrypt.pem", .encryptedPKCS8),
        ] {
            let bytes = Array(FileManager.default.contents(atPath: "\(dir)/\(file)")!)
            #expect(PrivateKeyFile.protection(of: bytes) == protection)
            #expect(try PrivateKeyFile.open(pem: bytes, passphrase: pass, path: file).publicKey == reference.publicKey)
        }
    }

    @Test("a file with no key in it is bad data")
    func noKey() {
        #expect(throws: KeylineError(.dataError, "")) {
            try PrivateKeyFile.open(pem: Array("hello".utf8), passphrase: nil, path: "x")
        }
    }
}

@Suite("Passphrase sources")
struct PassphraseSourceTests {
    @Test("an explicit file wins over the configured one, which wins over the systemd credential")
    func order() throws {
        let dir = try tempDir()
        try writeFile("\(dir)/explicit", "one\n", mode: 0o600)
        try writeFile("\(dir)/configured", "two\n", mode: 0o600)
        try writeFile("\(dir)/\(PassphraseSources.credentialName)", "three", mode: 0o400)
        let all = PassphraseSources(
            explicitFile: "\(dir)/explicit", configuredFile: "\(dir)/configured", credentialsDirectory: dir)
        #expect(try all.resolve(for: "k").bytes == Array("one".utf8))
        let noExplicit = PassphraseSources(configuredFile: "\(dir)/configured", credentialsDirectory: dir)
        #expect(try noExplicit.resolve(for: "k").bytes == Array("two".utf8))
        let credential = PassphraseSources(credentialsDirectory: dir)
        #expect(try credential.resolve(for: "k").bytes == Array("three".utf8))
    }

    @Test("a systemd credential may be group-readable (systemd's ACL mask, mode 0440); a passphrase file may not")
    func credentialACLMode() throws {
        let dir = try tempDir()
        try writeFile("\(dir)/\(PassphraseSources.credentialName)", "acl", mode: 0o440)
        #expect(try PassphraseSources(credentialsDirectory: dir).resolve(for: "k").bytes == Array("acl".utf8))
        try writeFile("\(dir)/configured", "two\n", mode: 0o440)
        #expect(throws: KeylineError.self) {
            try PassphraseSources(configuredFile: "\(dir)/configured").resolve(for: "k")
        }
        // Group-writable or world-readable stays refused even for a credential.
        try writeFile("\(dir)/\(PassphraseSources.credentialName)", "acl", mode: 0o444)
        #expect(throws: KeylineError.self) { try PassphraseSources(credentialsDirectory: dir).resolve(for: "k") }
        try writeFile("\(dir)/\(PassphraseSources.credentialName)", "acl", mode: 0o460)
        #expect(throws: KeylineError.self) { try PassphraseSources(credentialsDirectory: dir).resolve(for: "k") }
    }

    @Test("a CA's own systemd credential wins over the shared one")
    func perCACredential() throws {
        let dir = try tempDir()
        try writeFile("\(dir)/\(PassphraseSources.credentialName)", "shared", mode: 0o400)
        try writeFile("\(dir)/\(PassphraseSources.credentialName)-factory-2027", "own", mode: 0o400)
        #expect(
            try PassphraseSources(credentialsDirectory: dir, caName: "factory-2027").resolve(for: "k").bytes
                == Array("own".utf8))
        #expect(
            try PassphraseSources(credentialsDirectory: dir, caName: "dev").resolve(for: "k").bytes
                == Array("shared".utf8))
    }

    @Test("no source and no terminal is a key-guard refusal naming the ways to provide one")
    func none() {
        do {
            _ = try PassphraseSources(allowPrompt: false).resolve(for: "ca.key")
            Issue.record("resolved a passphrase from nowhere")
        } catch let e as KeylineError {
            #expect(e.code == .keyGuard)
            #expect(e.reason.contains("passphrase_file") && e.reason.contains(PassphraseSources.credentialName))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("a readable-by-others or empty passphrase file is refused")
    func guarded() throws {
        let dir = try tempDir()
        try writeFile("\(dir)/p", "secret\n", mode: 0o644)
        #expect(throws: KeylineError(.keyGuard, "")) { try PassphraseSources.read("\(dir)/p") }
        try writeFile("\(dir)/e", "\n", mode: 0o600)
        #expect(throws: KeylineError(.keyGuard, "")) { try PassphraseSources.read("\(dir)/e") }
    }

    @Test("generated passphrases are long and differ")
    func generate() {
        let a = PassphraseSources.generate(), b = PassphraseSources.generate()
        #expect(a.count == 32 && a != b)
    }

    @Test("a passphrase never prints its value")
    func description() {
        let p = Passphrase(bytes: Array("hunter2".utf8), source: "test")
        #expect(!"\(p)".contains("hunter2"))
    }
}
