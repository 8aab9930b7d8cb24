import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `TokenFuzzer <file>...`: runs saved inputs (a crash libFuzzer found, the seed corpus) through
/// the fuzz checks; `TokenFuzzer --write-seeds <dir>` writes the seed corpus. Left out of fuzz
/// builds, where libFuzzer supplies `main`.
@main
enum Replay {
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--write-seeds", arguments.count == 2 {
            for (name, bytes) in seeds() {
                guard FileManager.default.createFile(atPath: arguments[1] + "/" + name, contents: Data(bytes)) else {
                    print("TokenFuzzer: cannot write \(arguments[1])/\(name)")
                    exit(2)
                }
            }
            print("TokenFuzzer: \(seeds().count) seeds written to \(arguments[1])")
            return
        }
        for path in arguments {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("TokenFuzzer: cannot read \(path)")
                exit(2)
            }
            check(Array(data))
        }
        print("TokenFuzzer: \(arguments.count) inputs replayed, no crash")
    }
}
