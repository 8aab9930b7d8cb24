import Foundation
import PackagePlugin

/// Runs EmbedLua over the package's `lua/` folder so that scripts are compiled into the binaries.
@main
struct EmbedLuaPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let luaDirectory = context.package.directoryURL.appending(path: "lua")
        let scripts = try FileManager.default.contentsOfDirectory(at: luaDirectory, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "lua" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedLua.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(scripts.count) Lua scripts",
                executable: try context.tool(named: "EmbedLua").url,
                arguments: [output.path] + scripts.map(\.path),
                inputFiles: scripts,
                outputFiles: [output]
            )
        ]
    }
}
