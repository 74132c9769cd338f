"""PostgreSQL: the guarded asyncpg pool, its settings and the SQL migrations."""
