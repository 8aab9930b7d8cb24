-- basket_read: a basket's view, with Redis's clock (a read: nothing is written).
-- KEYS[1] basket: the basket hash
-- Returns {"ok", <the basket's BASKET fields>, nowMs}, or {"basket_not_found"}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'basket_not_found'} end
return basketView(KEYS[1], nowMs())
