"""Content backups: IPFS (verified against CIDs) and Gaia, export and re-import."""
