public import Foundation

/// A child process started with posix_spawn and reaped with waitpid. Tests use this rather than
/// Foundation's `Process`, whose exit detection was seen to miss children here (a zombie stayed
/// "running" forever).
public final class Subprocess: @unchecked Sendable {
    // @unchecked Sendable: `status` and `outputFD` are only touched by the owning test's code.
    public let pid: pid_t
    private var status: Int32?
    private var outputFD: Int32

    /// Starts `arguments[0]` (looked up in PATH) with `environment` added to ours. Standard output
    /// is captured when `captureOutput`, else discarded; standard error is discarded.
    public init(_ arguments: [String], environment: [String: String] = [:], captureOutput: Bool = false) throws {
        var merged = ProcessInfo.processInfo.environment
        for (key, value) in environment { merged[key] = value }
        var pipeFDs: [Int32] = [-1, -1]
        if captureOutput { guard pipe(&pipeFDs) == 0 else { throw POSIXError(.EMFILE) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        if captureOutput {
            posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
            posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        // After the dup2 above (actions run in order): the child keeps stdin, stdout and stderr
        // only. Without this it would inherit every socket the test process has open (thousands,
        // in the connection tests): a server started then runs out of descriptors, and keeps
        // clients' connections alive after they close.
        Self.closeInheritedDescriptors(&actions)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A clean signal mask and default handlers, whatever the test runner has set.
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGTERM)
        sigaddset(&defaults, SIGINT)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var child: pid_t = 0
        let result = posix_spawnp(&child, arguments[0], &actions, &attributes, argv, envp)
        if captureOutput { close(pipeFDs[1]) }
        guard result == 0 else {
            if captureOutput { close(pipeFDs[0]) }
            throw HarnessError("cannot start \(arguments[0]): error \(result)")
        }
        pid = child
        outputFD = captureOutput ? pipeFDs[0] : -1
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), found at run time because
    /// Swift's Glibc module does not declare it.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    private static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        if let addCloseFrom = addCloseFrom {
            _ = addCloseFrom(&actions, 3)
        }
    }

    deinit {
        if status == nil {
            Foundation.kill(pid, SIGKILL)
            var raw: Int32 = 0
            waitpid(pid, &raw, 0)
        }
        if outputFD >= 0 { close(outputFD) }
    }

    /// Reaps the child if it has exited; true while it runs.
    public var isRunning: Bool {
        guard status == nil else { return false }
        var raw: Int32 = 0
        let result = waitpid(pid, &raw, WNOHANG)
        if result == pid {
            status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            return false
        }
        return result == 0
    }

    /// Sends `signal` (e.g. SIGTERM, SIGSTOP) without waiting.
    public func signal(_ signal: Int32) {
        Foundation.kill(pid, signal)
    }

    public func kill() {
        Foundation.kill(pid, SIGKILL)
        while isRunning { usleep(2_000) }
    }

    /// Waits (polling, never blocking in waitpid) and returns the exit status and the output.
    public func finish(timeout: Duration = .seconds(120)) async throws -> (status: Int32, output: String) {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        var output = Data()
        while isRunning {
            drain(into: &output)
            if ContinuousClock.now > deadline {
                kill()
                throw HarnessError("pid \(pid) did not finish in time")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        drain(into: &output)
        return (status ?? -1, String(decoding: output, as: UTF8.self))
    }

    /// Synchronous variant for setup steps (initdb, pg_ctl).
    public func finishBlocking() -> Int32 {
        while isRunning { usleep(5_000) }
        return status ?? -1
    }

    private func drain(into output: inout Data) {
        guard outputFD >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            var poller = pollfd(fd: outputFD, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 0) > 0 else { return }
            let count = read(outputFD, &buffer, buffer.count)
            if count <= 0 { return }
            output.append(contentsOf: buffer.prefix(count))
        }
    }
}
