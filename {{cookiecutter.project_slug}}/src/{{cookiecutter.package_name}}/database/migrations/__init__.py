"""SQL migration files (`NNNN_description.sql`), applied in order by `migrate.py`."""
