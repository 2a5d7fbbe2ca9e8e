// keyline-rawbench: the raw cryptographic limit a station's bulk issuance is measured against — one P-256 key
// generation plus one ECDSA-SHA256 signature over a certificate-sized message, per certificate, on N threads.
//
// Usage: keyline-rawbench [--threads N] [--seconds S]   (prints one JSON line)
import Crypto
import Dispatch
import Foundation
import KeylineCore

var threads = 1
var seconds = 3.0
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--threads": threads = Int(args.popFirst() ?? "") ?? 1
    case "--seconds": seconds = Double(args.popFirst() ?? "") ?? 3
    default:
        FileHandle.standardError.write(Data("usage: keyline-rawbench [--threads N] [--seconds S]\n".utf8))
        exit(64)
    }
}
if threads < 1 { threads = ProcessInfo.processInfo.activeProcessorCount }

let issuer = P256.Signing.PrivateKey()
let tbs = Data((0..<420).map { UInt8($0 & 0xFF) })  // about the size of a device certificate's TBS
let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
let lock = NSLock()
nonisolated(unsafe) var total = 0
let start = DispatchTime.now().uptimeNanoseconds
DispatchQueue.concurrentPerform(iterations: threads) { _ in
    var n = 0
    while DispatchTime.now().uptimeNanoseconds < deadline {
        let device = DeviceKeys.p256()  // as keyline issue and the daemon make them
        var message = tbs
        message.append(device.publicKey.x963Representation)
        _ = try! issuer.signature(for: message)
        n += 1
    }
    lock.lock()
    total += n
    lock.unlock()
}
let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
print(
    "{\"threads\": \(threads), \"ops\": \(total), \"seconds\": \(String(format: "%.3f", elapsed)), \"per_sec\": \(String(format: "%.1f", Double(total) / elapsed))}"
)
