"""Byte pipelines: async iterators of bytes through compression, encryption and digests."""
