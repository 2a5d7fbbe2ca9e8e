// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Keyline",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "keyline", targets: ["keyline"]),
        .executable(name: "keyline-devsim", targets: ["keyline-devsim"]),
        .library(name: "KeylineCore", targets: ["KeylineCore"]),
        .library(name: "KeylineCustody", targets: ["KeylineCustody"]),
        .library(name: "KeylineLedger", targets: ["KeylineLedger"]),
        .library(name: "KeylineStation", targets: ["KeylineStation"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
        .package(url: "https://github.com/yaslab/CSV.swift.git", from: "2.5.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // libcrypto (OpenSSL 3, from libssl-dev) for opening the key files openssl writes.
        .systemLibrary(
            name: "CLibCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        // Pure issuance core: no file I/O, no clock, no randomness of its own.
        .target(
            name: "KeylineCore",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Mustache", package: "swift-mustache"),
            ]
        ),
        // Key custody: the guarded CA key file (libcrypto), passphrase sources, file guards.
        .target(
            name: "KeylineCustody",
            dependencies: [
                "KeylineCore",
                "CLibCrypto",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        // The ledger seam, the in-memory ledger, the SQLite (GRDB) ledger and the PostgreSQL (postgres-nio) ledger.
        .target(
            name: "KeylineLedger",
            dependencies: [
                "KeylineCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // Station: configuration, the issuance service (reserve -> sign -> commit -> write), init.
        .target(
            name: "KeylineStation",
            dependencies: [
                "KeylineCore",
                "KeylineCustody",
                "KeylineLedger",
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "CSV", package: "CSV.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // libusb-1.0 (from libusb-1.0-0-dev) for fixtures with a vendor-specific bulk interface.
        .systemLibrary(
            name: "CLibUSB",
            pkgConfig: "libusb-1.0",
            providers: [.apt(["libusb-1.0-0-dev"])]
        ),
        // The line: the daemon's service group, fixtures and their transports (tty, socket, libusb), the line
        // service (rate limits, work orders, idempotent re-delivery), the operator's console and the MES log.
        .target(
            name: "KeylineLine",
            dependencies: [
                "KeylineCore",
                "KeylineLedger",
                "KeylineStation",
                "CLibUSB",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        .executableTarget(
            name: "keyline",
            dependencies: [
                "KeylineCore",
                "KeylineCustody",
                "KeylineLedger",
                "KeylineStation",
                "KeylineLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
            ]
        ),
        // The raw P-256 keygen + sign limit that bulk issuance is compared with in Scripts/bench.
        .target(
            name: "KeylineDeviceSim",
            dependencies: [
                "KeylineCore",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        .executableTarget(
            name: "keyline-devsim",
            dependencies: ["KeylineDeviceSim", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "keyline-rawbench",
            dependencies: ["KeylineCore", "KeylineCustody", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .testTarget(
            name: "KeylineCoreTests",
            dependencies: [
                "KeylineCore", .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
        .testTarget(
            name: "KeylineCustodyTests",
            dependencies: [
                "KeylineCustody", "KeylineCore", .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "KeylineDeviceSimTests",
            dependencies: [
                "KeylineDeviceSim", "KeylineCore", .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "KeylineLineTests",
            dependencies: [
                "KeylineLine", "KeylineStation", "KeylineLedger", "KeylineCore", "KeylineDeviceSim",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "KeylineLedgerTests",
            dependencies: [
                "KeylineLedger", "KeylineCore", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        .testTarget(
            name: "KeylineStationTests",
            dependencies: [
                "KeylineStation", "KeylineCore", "KeylineCustody", "KeylineLedger",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ]
        ),
    ]
)
