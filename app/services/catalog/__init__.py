"""The catalog: the database connection, queries, stats and reports, retention and the trash."""
