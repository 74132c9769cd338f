"""Liveness, readiness and the IETF health report."""
