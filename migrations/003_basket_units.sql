-- 003: each basket's held units kept on its row (pending_units, confirmed_units), maintained by
-- statement-level triggers on reservations, so the audit reads one row per basket instead of
-- summing every reservation ever made: its cost grows with live data, not with history.
-- Writers that change reservations take a transaction-scoped advisory lock per basket, in id
-- order, before writing (EventApplier), so the triggers' basket updates never deadlock.

ALTER TABLE baskets ADD COLUMN pending_units bigint NOT NULL DEFAULT 0;
ALTER TABLE baskets ADD COLUMN confirmed_units bigint NOT NULL DEFAULT 0;

UPDATE baskets b
SET pending_units = t.pending, confirmed_units = t.confirmed
FROM (
    SELECT basket_id,
           COALESCE(sum(quantity) FILTER (WHERE status = 'pending'), 0) AS pending,
           COALESCE(sum(quantity) FILTER (WHERE status = 'confirmed'), 0) AS confirmed
    FROM reservations GROUP BY basket_id
) t
WHERE b.id = t.basket_id;

CREATE FUNCTION reservations_basket_units() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE baskets b SET pending_units = b.pending_units + d.pending, confirmed_units = b.confirmed_units + d.confirmed
        FROM (SELECT basket_id,
                     sum(CASE WHEN status = 'pending' THEN quantity ELSE 0 END) AS pending,
                     sum(CASE WHEN status = 'confirmed' THEN quantity ELSE 0 END) AS confirmed
              FROM new_rows GROUP BY basket_id) d
        WHERE b.id = d.basket_id AND (d.pending <> 0 OR d.confirmed <> 0);
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE baskets b SET pending_units = b.pending_units - d.pending, confirmed_units = b.confirmed_units - d.confirmed
        FROM (SELECT basket_id,
                     sum(CASE WHEN status = 'pending' THEN quantity ELSE 0 END) AS pending,
                     sum(CASE WHEN status = 'confirmed' THEN quantity ELSE 0 END) AS confirmed
              FROM old_rows GROUP BY basket_id) d
        WHERE b.id = d.basket_id AND (d.pending <> 0 OR d.confirmed <> 0);
    ELSE
        UPDATE baskets b SET pending_units = b.pending_units + d.pending, confirmed_units = b.confirmed_units + d.confirmed
        FROM (SELECT basket_id, sum(pending) AS pending, sum(confirmed) AS confirmed
              FROM (SELECT basket_id,
                           CASE WHEN status = 'pending' THEN quantity ELSE 0 END AS pending,
                           CASE WHEN status = 'confirmed' THEN quantity ELSE 0 END AS confirmed
                    FROM new_rows
                    UNION ALL
                    SELECT basket_id,
                           CASE WHEN status = 'pending' THEN -quantity ELSE 0 END,
                           CASE WHEN status = 'confirmed' THEN -quantity ELSE 0 END
                    FROM old_rows) changes
              GROUP BY basket_id) d
        WHERE b.id = d.basket_id AND (d.pending <> 0 OR d.confirmed <> 0);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER reservations_units_insert AFTER INSERT ON reservations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reservations_basket_units();
CREATE TRIGGER reservations_units_update AFTER UPDATE ON reservations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reservations_basket_units();
CREATE TRIGGER reservations_units_delete AFTER DELETE ON reservations
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION reservations_basket_units();

-- What the audit reads instead of the whole history: pending reservations, and confirmed ones
-- changed recently.
CREATE INDEX reservations_pending ON reservations (basket_id) WHERE status = 'pending';
CREATE INDEX reservations_confirmed_recently ON reservations (updated_at) WHERE status = 'confirmed';
