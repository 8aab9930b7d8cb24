public import RedisClient

/// The Lua scripts of `lua/`, compiled into the binary at build time (see Plugins/EmbedResourcesPlugin).
/// Each is `lua/prelude.lua` (the stored records' field lists and what every script shares)
/// followed by the script's own file; Redis knows it by the SHA of that joined source.
public enum ReservationScripts {
    /// `lua/prelude.lua`, the part every script starts with.
    public static let prelude = embedded("prelude")

    public static let reserve = script("reserve")
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

    public static let all: [RedisScript] = [
        reserve, release, payment, basketCreate, basketAdjust, repairReservations, repairBasket, repairLease, dueHolds, repairUnits,
        refuseSoldOut, basketRead, basketUpdate,
    ]

    /// A script's own file, without the prelude (what its header declares).
    public static func ownSource(of script: RedisScript) -> String { embedded(script.name) }

    private static func script(_ name: String) -> RedisScript {
        RedisScript(name: name, source: prelude + "\n" + embedded(name))
    }

    private static func embedded(_ name: String) -> String {
        guard let source = EmbeddedLua.sources.first(where: { $0.key == name })?.value else {
            fatalError("lua/\(name).lua was not embedded at build time")
        }
        return source
    }
}
