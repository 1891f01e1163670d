"""Content formats: CID, CAR, dag-pb and UnixFS, checked block by block."""
