"""Shared model plumbing: camelCase field names, UTC timestamps, pagination."""

from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


def utcnow() -> datetime:
    return datetime.now(UTC)


def document_alias(name: str) -> str:
    """Stored field names are camelCase like the seed's schema; `id` is Mongo's `_id`."""
    return "_id" if name == "id" else to_camel(name)


class ApiSchema(BaseModel):
    """Base of request and response bodies: camelCase on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True,
                              from_attributes=True)


T = TypeVar("T")


class Page(ApiSchema, Generic[T]):
    items: list[T]
    page: int
    limit: int
    total: int
    pages: int = Field(description="number of pages at this limit")
