import Foundation
import PackagePlugin

/// Embeds the repository's `lua/*.lua` (into ReservationScripts, as `EmbeddedLua`) and
/// `migrations/*.sql` (into ReconcilerCore, as `EmbeddedMigrations`) and `docs/*.yaml` (into
/// GatewayCore, as `EmbeddedDocs`: the OpenAPI document the gateway serves).
@main
struct EmbedResourcesPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let (folder, fileExtension, enumName): (String, String, String)
        switch target.name {
        case "ReservationScripts": (folder, fileExtension, enumName) = ("lua", "lua", "EmbeddedLua")
        case "ReconcilerCore": (folder, fileExtension, enumName) = ("migrations", "sql", "EmbeddedMigrations")
        case "GatewayCore": (folder, fileExtension, enumName) = ("docs", "yaml", "EmbeddedDocs")
        default: return []
        }
        let directory = context.package.directoryURL.appending(path: folder)
        let files = try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == fileExtension }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        let output = context.pluginWorkDirectoryURL.appending(path: "\(enumName).swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) \(folder) files",
                executable: try context.tool(named: "EmbedResources").url,
                arguments: [output.path, enumName] + files.map(\.path),
                inputFiles: files,
                outputFiles: [output]
            )
        ]
    }
}
