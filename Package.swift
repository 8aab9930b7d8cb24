// swift-tools-version:6.0
import PackageDescription

// scripts/fuzz.sh builds with RESERVATION_FUZZ_BUILD=1 (in its own .build-fuzz): the code under
// fuzz gets libFuzzer's coverage instrumentation, and RequestFuzzer links libFuzzer, which
// supplies `main`. Ordinary builds are untouched (RequestFuzzer is then a replay tool).
let fuzzBuild = Context.environment["RESERVATION_FUZZ_BUILD"] == "1"
let fuzzCoverage: [SwiftSetting] = fuzzBuild ? [.unsafeFlags(["-sanitize=fuzzer"])] : []

// Imports stay honest: existentials say `any`, a file sees only members of modules it imports,
// and an import is internal unless a file says `public import`.
let strictness: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "reservation-gateway",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "gateway", targets: ["Gateway"]),
        .executable(name: "reconciler", targets: ["Reconciler"]),
        .executable(name: "bench-baseline", targets: ["BenchBaseline"]),
        .executable(name: "bench-scripts", targets: ["BenchScripts"]),
        .executable(name: "bench-tokens", targets: ["BenchTokens"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.0"),
    ],
    targets: [
        // C bindings: the only targets that see hiredis and libpq.
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // Redis client: NIO sockets, hiredis' reply reader, pipelined batches.
        .target(
            name: "RedisClient",
            dependencies: [
                "CHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // Calendar arithmetic (days <-> dates), shared by the API's RFC 3339 and the Postgres wire.
        .target(name: "CivilTime"),
        // Postgres client: libpq connections driven on a thread pool, never on an event loop.
        .target(
            name: "PostgresClient",
            dependencies: [
                "CLibPQ", "CivilTime",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Consumer tokens (JWT, HS256 and ES256): keys, verification, a cache, a minter. Crypto only.
        .target(
            name: "ConsumerTokens",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: fuzzCoverage),
        // Domain: ids, keys, partitions, records, configuration. No Redis client types.
        .target(
            name: "ReservationCore",
            dependencies: [
                "CivilTime",
                .product(name: "Logging", package: "swift-log"),
            ], swiftSettings: fuzzCoverage),
        // The waiting room's decisions: the pre-queue's draw, tickets and admissions, a ticket's view.
        .target(
            name: "WaitingRoom",
            dependencies: ["ReservationCore", "ConsumerTokens", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: fuzzCoverage),
        // The seam between Swift and lua/: one typed call per script (its keys, arguments and
        // reply decoding) and per plain command the store sends.
        .target(
            name: "ReservationScripts",
            dependencies: [
                "RedisClient", "ReservationCore",
                .product(name: "NIOCore", package: "swift-nio"),
            ], plugins: ["EmbedResourcesPlugin"]),
        // A small SwiftNIO HTTP/1.1 server (the gateway's API and the reconciler's /metrics).
        .target(
            name: "HTTPServing",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ], swiftSettings: fuzzCoverage),
        // The gateway's routes, request handling, metrics and hold expiry.
        .target(
            name: "GatewayCore",
            dependencies: [
                "ReservationCore", "ReservationScripts", "RedisClient", "HTTPServing", "ConsumerTokens", "WaitingRoom",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ], swiftSettings: fuzzCoverage, plugins: ["EmbedResourcesPlugin"]),
        // The reconciler: streams to Postgres, audit and repair.
        .target(
            name: "ReconcilerCore",
            dependencies: [
                "ReservationCore", "ReservationScripts", "RedisClient", "PostgresClient", "HTTPServing",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ], plugins: ["EmbedResourcesPlugin"]),

        .executableTarget(
            name: "Gateway",
            dependencies: [
                "GatewayCore", "ReservationCore", "ReservationScripts", "RedisClient", "ConsumerTokens",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .executableTarget(
            name: "Reconciler",
            dependencies: [
                "ReconcilerCore", "ReservationCore", "ReservationScripts", "RedisClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // Benchmark-only: the smallest SwiftNIO HTTP/1.1 server, the yardstick of the benchmark.
        .executableTarget(
            name: "BenchBaseline",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        // Benchmark-only: the scripts and the reserve call's keys and arguments, for bench/ (one source).
        .executableTarget(
            name: "BenchScripts",
            dependencies: [
                "ReservationScripts", "ReservationCore", "RedisClient", "ConsumerTokens", .product(name: "Crypto", package: "swift-crypto"),
            ]),

        // Fuzzing: RequestDecoder under libFuzzer (scripts/fuzz.sh); in ordinary builds a replay tool.
        .executableTarget(
            name: "RequestFuzzer",
            dependencies: [
                "GatewayCore", "HTTPServing", "ReservationCore", "ConsumerTokens", "WaitingRoom",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ], path: "Fuzz/RequestFuzzer", exclude: fuzzBuild ? ["Replay.swift"] : ["FuzzMain.swift"],
            swiftSettings: [.unsafeFlags(fuzzBuild ? ["-parse-as-library", "-sanitize=fuzzer"] : ["-parse-as-library"])],
            linkerSettings: fuzzBuild ? [.unsafeFlags(["-sanitize=fuzzer", "-use-ld=lld"])] : []),

        // Fuzzing: consumer token verification under libFuzzer (scripts/fuzz.sh); likewise a replay tool.
        .executableTarget(
            name: "TokenFuzzer",
            dependencies: ["ConsumerTokens", .product(name: "Crypto", package: "swift-crypto")],
            path: "Fuzz/TokenFuzzer", exclude: fuzzBuild ? ["Replay.swift"] : ["FuzzMain.swift"],
            swiftSettings: [.unsafeFlags(fuzzBuild ? ["-parse-as-library", "-sanitize=fuzzer"] : ["-parse-as-library"])],
            linkerSettings: fuzzBuild ? [.unsafeFlags(["-sanitize=fuzzer", "-use-ld=lld"])] : []),
        // Benchmark-only: µs per token verification (HS256, ES256 uncached and cached), no sockets.
        .executableTarget(
            name: "BenchTokens", dependencies: ["ConsumerTokens", .product(name: "Crypto", package: "swift-crypto")]),

        // Build-time tool: embeds lua/*.lua and migrations/*.sql into the binaries (one source each).
        .executableTarget(name: "EmbedResources"),
        .plugin(name: "EmbedResourcesPlugin", capability: .buildTool(), dependencies: ["EmbedResources"]),

        .target(
            name: "TestSupport",
            dependencies: [
                "RedisClient", "PostgresClient", "ReservationCore", "ReservationScripts", "GatewayCore", "HTTPServing",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ], path: "Tests/TestSupport"),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "TestSupport"]),
        .testTarget(name: "WaitingRoomTests", dependencies: ["WaitingRoom", "ReservationCore"]),
        .testTarget(name: "ReservationScriptsTests", dependencies: ["ReservationScripts", "ReservationCore", "RedisClient"]),
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient", "TestSupport"]),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "GatewayCore", "ReconcilerCore", "HTTPServing", "ReservationCore", "ReservationScripts", "RedisClient", "TestSupport",
                "ConsumerTokens",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]),
        .testTarget(
            name: "ConsumerTokensTests",
            dependencies: ["ConsumerTokens", "TestSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(
            name: "ReconcilerTests",
            dependencies: [
                "ReconcilerCore", "GatewayCore", "ReservationCore", "ReservationScripts", "RedisClient", "PostgresClient", "TestSupport",
            ]),
    ],
    swiftLanguageModes: [.v6]
)

for target in package.targets where target.type != .system && target.type != .plugin {
    target.swiftSettings = (target.swiftSettings ?? []) + strictness
}
