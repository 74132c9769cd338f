"""Staying up while dependencies fail: circuit breakers, load shedding, request deadlines."""
