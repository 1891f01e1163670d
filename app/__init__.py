"""Backvault: backups of PostgreSQL, MongoDB, IPFS and Gaia content."""

__version__ = "0.1.0"
