-- 004: a Redis rollback is seen, never merged. `redis_entry` is the stream entry that carried
-- `redis_seq`: a genuine event's seq and entry id grow together, so an event whose seq Postgres
-- has already seen but whose entry is newer was written by a Redis that lost data and reused
-- the number. The applier then stops taking stock and capacity from events (`rolled_back_at`)
-- until a repair rebuilds the basket with Postgres's capacity.
-- The indexes serve the repair's windowed read and the rebuild's most-active-first order.

ALTER TABLE baskets ADD COLUMN redis_entry text;
ALTER TABLE baskets ADD COLUMN rolled_back_at timestamptz;
CREATE INDEX reservations_by_basket_updated ON reservations (basket_id, updated_at);
CREATE INDEX reservations_updated ON reservations (updated_at);
