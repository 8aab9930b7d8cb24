import RedisClient

/// The Lua scripts of `lua/`, compiled into the binary at build time (see Plugins/EmbedLuaPlugin).
public enum ReservationScripts {
    public static let reserve = script("reserve")
    public static let release = script("release")
    public static let payment = script("payment")
    public static let basket = script("basket")
    public static let repair = script("repair")

    public static let all: [RedisScript] = [reserve, release, payment, basket, repair]

    private static func script(_ name: String) -> RedisScript {
        guard let source = EmbeddedLua.sources.first(where: { $0.key == name })?.value else {
            fatalError("lua/\(name).lua was not embedded at build time")
        }
        return RedisScript(name: name, source: source)
    }
}
