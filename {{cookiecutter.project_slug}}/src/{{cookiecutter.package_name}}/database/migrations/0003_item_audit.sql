-- The example consumer's effect: one row per item.created event the worker handled.
CREATE TABLE item_audit (
    message_id uuid PRIMARY KEY,
    item_id    bigint NOT NULL,
    name       text NOT NULL,
    request_id text,
    user_id    text,
    created_at timestamptz NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now()
);
