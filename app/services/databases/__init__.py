"""Database backups: dump, restore, verify and manifests; one folder per database kind."""
