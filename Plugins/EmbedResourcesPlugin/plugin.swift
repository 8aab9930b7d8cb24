import Foundation
import PackagePlugin

/// Embeds the repository's `lua/*.lua` (into ReservationScripts, as `EmbeddedLua`) and
/// `migrations/*.sql` (into ReconcilerCore, as `EmbeddedMigrations`) and `docs/*.yaml` (into
/// GatewayCore, as `EmbeddedDocs`: the OpenAPI document the gateway serves) with `web/*.html`
/// (the waiting room's page).
/// The files are listed when SwiftPM plans the build: after adding one to a folder, an
/// incremental build embeds it once the package is planned again (`touch Package.swift`); a
/// fresh clone always has them all.
@main
struct EmbedResourcesPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let sources: [(folder: String, fileExtension: String)]
        let enumName: String
        switch target.name {
        case "ReservationScripts": (sources, enumName) = ([("lua", "lua")], "EmbeddedLua")
        case "ReconcilerCore": (sources, enumName) = ([("migrations", "sql")], "EmbeddedMigrations")
        case "GatewayCore": (sources, enumName) = ([("docs", "yaml"), ("web", "html")], "EmbeddedDocs")
        default: return []
        }
        let folder = sources.map(\.folder).joined(separator: " and ")
        let files = try sources.flatMap { source in
            try FileManager.default.contentsOfDirectory(
                at: context.package.directoryURL.appending(path: source.folder), includingPropertiesForKeys: nil
            )
            .filter { $0.pathExtension == source.fileExtension }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        }
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
