"""MongoDB: our own mongodump archive writer and reader, and restores."""
