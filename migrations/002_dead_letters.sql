-- 002: events Postgres refused for a reason no retry can fix (a range, a constraint, a malformed
-- field), set aside with the error instead of blocking every later event. An operator reads
-- them, fixes the cause, and replays or discards them (docs/operations.md).

CREATE TABLE dead_letters (
    stream     text NOT NULL,
    entry_id   text NOT NULL,
    fields     jsonb NOT NULL,
    sqlstate   text,
    error      text NOT NULL,
    attempts   integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, entry_id)
);
