"""Backups that prove themselves: verification policy, rolling re-verification, drills."""
