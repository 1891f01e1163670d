"""The one list of database kinds: adding a kind is its package and one line here.

Each package `<name>/` holds `facts.py` (`FACTS`, plain data that settings and models
read without loading the kind) and `kind.py` (`KIND`, the DatabaseKind implementation)."""

from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import Any

KIND_PACKAGES: tuple[str, ...] = (
    "postgres",
    "mongodb",
)


@dataclass(frozen=True)
class KindFacts:
    """What settings need of a kind before any of its code is loaded."""

    name: str  # the source `kind` and the backup `kind` in the catalog
    uri_schemes: frozenset[str]  # a source URI of this kind starts with one of these
    default_database: str  # backed up when neither `database` nor the URI's path names one


@cache
def kind_facts() -> tuple[KindFacts, ...]:
    """The facts of every registered kind, in registry order."""
    return tuple(_member(package, "facts", "FACTS") for package in KIND_PACKAGES)


def facts_of(name: str) -> KindFacts:
    return next(f for f in kind_facts() if f.name == name)


def load_kind(package: str) -> Any:
    """The DatabaseKind of a registered package (typed by the caller)."""
    return _member(package, "kind", "KIND")


def _member(package: str, module: str, name: str) -> Any:
    return getattr(import_module(f"{__package__}.{package}.{module}"), name)
