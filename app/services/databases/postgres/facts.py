"""PostgreSQL as settings see it."""

from app.services.databases.registry import KindFacts

FACTS = KindFacts(name="postgres", uri_schemes=frozenset({"postgres", "postgresql"}),
                  default_database="postgres")
