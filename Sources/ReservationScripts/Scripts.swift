public import RedisClient

/// The Lua scripts of `lua/`, compiled into the binary at build time (see Plugins/EmbedResourcesPlugin).
public enum ReservationScripts {
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

    public static let all: [RedisScript] = [
        reserve, release, payment, basketCreate, basketAdjust, repairReservations, repairBasket, repairLease, dueHolds, repairUnits,
        refuseSoldOut,
    ]

    private static func script(_ name: String) -> RedisScript {
        guard let source = EmbeddedLua.sources.first(where: { $0.key == name })?.value else {
            fatalError("lua/\(name).lua was not embedded at build time")
        }
        return RedisScript(name: name, source: source)
    }
}
