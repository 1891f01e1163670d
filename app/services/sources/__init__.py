"""Sources: what is backed up and restored (PostgreSQL, MongoDB)."""
