-- Transactional outbox: events are written in the same transaction as the state they
-- describe, then published in id order by the relay (messaging/outbox.py).
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   uuid NOT NULL UNIQUE,
    type         text NOT NULL,
    payload      jsonb NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
-- The relay reads the pending rows in order; the purge finds the old published ones.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Messages a consumer has handled, recorded in the handler's own transaction: a
-- redelivered message finds its id here and is acknowledged without running twice.
CREATE TABLE processed_messages (
    consumer     text NOT NULL,
    message_id   uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
