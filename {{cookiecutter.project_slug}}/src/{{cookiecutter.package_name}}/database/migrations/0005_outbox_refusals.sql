-- An event the broker refuses for good (larger than NATS's max_payload, say) is set aside
-- with the reason, so that it no longer holds up the events after it; it stays here until
-- an operator re-queues it (refused_at = NULL) or deletes it (docs/runbook.md).
ALTER TABLE outbox ADD COLUMN refused_at timestamptz, ADD COLUMN refusal text;
