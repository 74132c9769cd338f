"""The example resource: items, stored in PostgreSQL. Delete this package to start clean."""
