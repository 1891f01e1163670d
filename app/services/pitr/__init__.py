"""Point-in-time recovery of PostgreSQL sources: WAL archiving, base backups, continuity,
restore to a time."""
