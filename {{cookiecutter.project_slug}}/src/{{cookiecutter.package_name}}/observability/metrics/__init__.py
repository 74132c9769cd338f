"""Prometheus metrics: the service's families, the scrape endpoint, readings of other parts."""
