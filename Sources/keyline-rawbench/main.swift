// keyline-rawbench: the raw cryptographic limit a station's bulk issuance is measured against — one P-256 key
// generation plus one ECDSA-SHA256 signature over a certificate-sized message, per certificate, on N threads.
//
// With --files DIR it also writes each device's three files into DIR as `keyline issue` does (the key staged as
// .key.partial with mode 0600, a certificate-sized .pem and .chain.pem, the rename), with nothing else: no X.509
// structure, no ledger, and the file system flushed once at the end (keyline also flushes each chunk's staged keys
// before the chunk commits). That is the floor of any tool that leaves the same files behind on the same disk.
//
// Usage: keyline-rawbench [--threads N] [--seconds S] [--files DIR]   (prints one JSON line)
import Crypto
import Dispatch
import Foundation
import KeylineCore
import KeylineCustody

#if canImport(Glibc)
    import Glibc
#endif

var threads = 1
var seconds = 3.0
var files: String?
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--threads": threads = Int(args.popFirst() ?? "") ?? 1
    case "--seconds": seconds = Double(args.popFirst() ?? "") ?? 3
    case "--files": files = args.popFirst()
    default:
        FileHandle.standardError.write(
            Data("usage: keyline-rawbench [--threads N] [--seconds S] [--files DIR]\n".utf8))
        exit(64)
    }
}
if threads < 1 { threads = ProcessInfo.processInfo.activeProcessorCount }

let issuer = P256.Signing.PrivateKey()
let tbs = Data((0..<420).map { UInt8($0 & 0xFF) })  // about the size of a device certificate's TBS
if let files {
    guard mkdir(files, 0o755) == 0 || errno == EEXIST else {
        FileHandle.standardError.write(Data("keyline-rawbench: cannot create \(files)\n".utf8))
        exit(74)
    }
}
// Sizes as keyline's: a device certificate of about 455 bytes (676 in PEM), a CA certificate of about 480.
let fakeCA = PEM.encode(Array(tbs) + Array(tbs.prefix(60)), label: "CERTIFICATE")

/// The three files of one device, in `keyline issue`'s order and with its calls.
func writeFiles(_ dir: String, name: String, keyDER: [UInt8], signature: Data, message: Data) throws {
    let path = { (ext: String) in "\(dir)/\(name).\(ext)" }
    let keyPEM = PEM.encode(keyDER, label: "PRIVATE KEY")
    try SafeFile.writeInPlace(Array((keyPEM + "\n").utf8), to: path("key.partial"), mode: 0o600)
    let pem = PEM.encode(Array(message.prefix(385)) + Array(signature), label: "CERTIFICATE")
    try SafeFile.writeInPlace(Array((pem + "\n").utf8), to: path("pem"))
    try SafeFile.writeInPlace(Array((pem + "\n" + fakeCA + "\n" + fakeCA + "\n").utf8), to: path("chain.pem"))
    guard rename(path("key.partial"), path("key")) == 0 else { throw CocoaError(.fileWriteUnknown) }
}

let filesDir = files
let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
let lock = NSLock()
nonisolated(unsafe) var total = 0
let start = DispatchTime.now().uptimeNanoseconds
DispatchQueue.concurrentPerform(iterations: threads) { thread in
    var n = 0
    while DispatchTime.now().uptimeNanoseconds < deadline {
        let (device, scalar) = DeviceKeys.p256WithScalar()  // as keyline issue and the daemon make them
        let x963 = device.publicKey.x963Representation
        var message = tbs
        message.append(x963)
        let signature = try! issuer.signature(for: message)
        if let files = filesDir {
            // The key's PKCS #8 as keyline issue encodes it, from the scalar and the point already made.
            try! writeFiles(
                files, name: "raw-\(thread)-\(n)",
                keyDER: CertificateFactory.pkcs8P256(scalar: scalar, x963: Array(x963)),
                signature: signature.derRepresentation, message: message)
        }
        n += 1
    }
    lock.lock()
    total += n
    lock.unlock()
}
if let files { try! SafeFile.syncFileSystem(of: files) }
let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
print(
    "{\"threads\": \(threads), \"ops\": \(total), \"seconds\": \(String(format: "%.3f", elapsed)), \"per_sec\": \(String(format: "%.1f", Double(total) / elapsed))}"
)
