// swift-tools-version:6.2
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "reaperd",
    products: [
        .executable(name: "reaperd", targets: ["reaperd"]),
        .executable(name: "reaperctl", targets: ["reaperctl"]),
    ],
    targets: [
        // Linux headers Glibc does not export: epoll, timerfd, signalfd, splice,
        // and the kernel's full struct tcp_info.
        .target(name: "CLinuxShim"),
        // libsystemd from Debian's libsystemd-dev: sd_notify, sd_listen_fds, sd_journal_sendv.
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        .target(
            name: "ReaperCore",
            dependencies: ["CLinuxShim", "CSystemd"],
            swiftSettings: strict
        ),
        .executableTarget(name: "reaperd", dependencies: ["ReaperCore"], swiftSettings: strict),
        .executableTarget(name: "reaperctl", dependencies: ["ReaperCore"], swiftSettings: strict),
        // Unit tests of pure logic. The integration tests start the real binaries
        // and live in Tests/integration (pytest), run by `make test`.
        .testTarget(name: "ReaperCoreTests", dependencies: ["ReaperCore"], swiftSettings: strict),
    ]
)
