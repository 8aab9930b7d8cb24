-- 001: baskets, reservations and payments, as the reconciler writes them from the event streams.

CREATE TABLE baskets (
    id               text PRIMARY KEY,
    stock            integer NOT NULL CHECK (stock >= 0),
    capacity         integer NOT NULL CHECK (capacity >= 0),
    hold_seconds     integer NOT NULL DEFAULT 600,
    max_per_consumer integer NOT NULL DEFAULT 1,
    -- The gateway's per-basket change counter of the last event applied: events carry absolute
    -- values, and an event older than this one changes nothing (idempotent, order-proof).
    redis_seq        bigint  NOT NULL DEFAULT 0,
    -- Optimistic locking: every change is UPDATE ... WHERE id = $1 AND version = $2, version + 1.
    version          bigint  NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservations (
    id          text PRIMARY KEY,
    basket_id   text NOT NULL,
    consumer_id text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    status      text NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled', 'expired')),
    expires_at  timestamptz NOT NULL,
    payment_id  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_by_basket ON reservations (basket_id, status);

CREATE TABLE payments (
    external_id    text UNIQUE NOT NULL,
    reservation_id text,
    payment_id     text,
    amount_cents   bigint,
    currency       text,
    kind           text NOT NULL,
    outcome        text NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_by_reservation ON payments (reservation_id);
