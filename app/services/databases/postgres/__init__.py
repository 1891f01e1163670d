"""PostgreSQL: pg_dump/pg_restore as subprocesses, metadata, archive reading."""
