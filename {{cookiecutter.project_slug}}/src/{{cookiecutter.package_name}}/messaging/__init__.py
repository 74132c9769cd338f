"""Events through a transactional outbox to a broker, and the worker that consumes them."""
