/// The fuzz build's entry point (Replay.swift is left out then): hands the command line to
/// libFuzzer's driver with our callback. (SwiftPM routes `main` to an executable's own entry
/// point, so libFuzzer's `main` would never run.)
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

@main
enum FuzzMain {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        let status = runFuzzerDriver(&argc, &argv) { data, count in fuzz(data, count) }
        exit(status)
    }
}

#if canImport(Glibc)
    import Glibc
#endif
