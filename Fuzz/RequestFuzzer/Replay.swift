import Foundation

/// `RequestFuzzer <file>...`: runs saved inputs (a crash libFuzzer found, the seed corpus) through
/// the fuzz checks. Left out of fuzz builds, where libFuzzer supplies `main`.
@main
enum Replay {
    static func main() {
        for path in CommandLine.arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("RequestFuzzer: cannot read \(path)")
                exit(2)
            }
            check(Array(data))
        }
        print("RequestFuzzer: \(CommandLine.arguments.count - 1) inputs replayed, no crash")
    }
}
