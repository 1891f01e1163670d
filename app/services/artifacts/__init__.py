"""Artifacts: byte stages, compression, encryption and digests, and reading a stored one back."""
