import Foundation
public import RedisClient

/// The Lua scripts of `lua/`, compiled into the binary at build time (see Plugins/EmbedResourcesPlugin).
/// Each is the parts of `lua/prelude.lua` it uses (the stored records' field lists and what
/// every script shares) followed by the script's own file; Redis knows it by the SHA of that
/// joined source. Only the parts used are joined: Redis runs a script's whole body on every call,
/// and the hot scripts must not pay for tables and closures they never touch.
public enum ReservationScripts {
    /// `lua/prelude.lua`, the part every script starts with.
    public static let prelude = embedded("prelude")

    public static let reserve = script("reserve")
    /// `reserve.lua` for a call of one, written straight (what most calls are when nothing coalesces).
    public static let reserveOne = script("reserve_one")
    public static let release = script("release")
    public static let payment = script("payment")
    public static let basketCreate = script("basket_create")
    public static let basketAdjust = script("basket_adjust")
    public static let repairReservations = script("repair_reservations")
    public static let repairBasket = script("repair_basket")
    public static let repairLease = script("repair_lease")
    public static let dueHolds = script("due_holds")
    public static let repairUnits = script("repair_units")
    public static let refuseSoldOut = script("refuse_sold_out")
    public static let basketRead = script("basket_read")
    public static let basketUpdate = script("basket_update")
    public static let queue = script("queue")

    public static let all: [RedisScript] = [
        reserve, reserveOne, release, payment, basketCreate, basketAdjust, repairReservations, repairBasket, repairLease, dueHolds, repairUnits,
        refuseSoldOut, basketRead, basketUpdate, queue,
    ]

    /// A script's own file, without the prelude (what its header declares).
    public static func ownSource(of script: RedisScript) -> String { embedded(script.name) }

    private static func script(_ name: String) -> RedisScript {
        RedisScript(name: name, source: joined(own: embedded(name), prelude: prelude))
    }

    /// `own` after the definitions of `prelude` it uses, directly or through another one, in the
    /// prelude's order. A definition is a top-level `local NAME = ...` or `local function NAME(`
    /// with the comment lines just before it; the prelude's opening comment is left out.
    public static func joined(own: String, prelude: String) -> String {
        let parts = definitions(prelude)
        var used: Set<String> = []
        var texts = [own]
        while let next = parts.first(where: { part in !used.contains(part.name) && texts.contains { mentions($0, part.name) } }) {
            used.insert(next.name)
            texts.append(next.text)
        }
        let chosen = parts.filter { used.contains($0.name) }.map(\.text).joined()
        return chosen + own
    }

    /// The prelude's definitions, in order: each starts at a top-level `local`, takes the comment
    /// lines just before it and every line after it up to the next blank line or definition.
    static func definitions(_ prelude: String) -> [(name: String, text: String)] {
        var parts: [(name: String, text: String)] = []
        var comments = ""
        var open = false
        for line in prelude.split(separator: "\n", omittingEmptySubsequences: false) {
            let text = line + "\n"
            if line.isEmpty {
                comments = ""
                open = false
            } else if line.hasPrefix("local ") {
                let declared = line.hasPrefix("local function ") ? line.dropFirst("local function ".count) : line.dropFirst("local ".count)
                parts.append((String(declared.prefix { $0.isLetter || $0.isNumber || $0 == "_" }), comments + text))
                comments = ""
                open = true
            } else if open && !line.hasPrefix("--") {
                parts[parts.count - 1].text += comments + text
                comments = ""
            } else {
                comments += text
            }
        }
        return parts
    }

    /// Whether `source` names `identifier` as a whole word.
    static func mentions(_ source: String, _ identifier: String) -> Bool {
        var rest = source[...]
        while let range = rest.range(of: identifier) {
            let before = range.lowerBound == source.startIndex ? nil : source[source.index(before: range.lowerBound)]
            let after = range.upperBound == source.endIndex ? nil : source[range.upperBound]
            let isWordCharacter = { (character: Character?) in character.map { $0.isLetter || $0.isNumber || $0 == "_" } ?? false }
            if !isWordCharacter(before) && !isWordCharacter(after) { return true }
            rest = source[range.upperBound...]
        }
        return false
    }

    private static func embedded(_ name: String) -> String {
        guard let source = EmbeddedLua.sources.first(where: { $0.key == name })?.value else {
            fatalError("lua/\(name).lua was not embedded at build time")
        }
        return source
    }
}
