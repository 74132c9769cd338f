"""State shared by every replica, in Redis: rate limits, idempotency keys, locks, periodic jobs."""
