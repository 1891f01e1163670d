"""MongoDB as settings see it."""

from app.services.databases.registry import KindFacts

FACTS = KindFacts(name="mongodb", uri_schemes=frozenset({"mongodb", "mongodb+srv"}),
                  default_database="test")
