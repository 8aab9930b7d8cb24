-- 005: a basket's sale window and pause (its settings, `BasketSettings`), kept by the reconciler
-- from the events that carry them whole (basket_created, basket_updated, basket_repaired).
-- `settings_seq` is the seq of the event that last set them: settings merge latest-by-sequence,
-- so a redelivered older event (a basket_created after a PATCH) never takes them back.

ALTER TABLE baskets ADD COLUMN opens_at timestamptz, ADD COLUMN closes_at timestamptz, ADD COLUMN paused boolean NOT NULL DEFAULT false, ADD COLUMN settings_seq bigint NOT NULL DEFAULT 0;

-- Rows written before: their hold and limit are as of their last applied event at the latest.
UPDATE baskets SET settings_seq = redis_seq;
