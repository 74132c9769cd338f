-- The relay claims a batch of outbox rows in a short transaction (claimed_until: a lease),
-- publishes them outside any transaction, then marks them sent in a second one. A claim
-- that is still live keeps other replicas' relays off those rows; a relay that died
-- leaves a claim that simply expires (messaging/outbox.py).
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
CREATE INDEX outbox_claimed ON outbox (claimed_until)
    WHERE published_at IS NULL AND claimed_until IS NOT NULL;
