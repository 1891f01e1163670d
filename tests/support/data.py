"""Databases with tricky content, and value-for-value snapshots of them for comparison."""

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from bson import Binary, Int64, ObjectId, Regex, Timestamp
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel

PG_SCHEMA = r"""
CREATE TABLE authors (
    id serial PRIMARY KEY, name text NOT NULL, bio text, tags text[], meta jsonb,
    avatar bytea, joined timestamptz, rating numeric(30, 10), score double precision,
    active boolean, born date, nap interval);
CREATE UNIQUE INDEX authors_lower_name ON authors (lower(name));
CREATE TABLE posts (
    id bigserial PRIMARY KEY,
    author_id int NOT NULL REFERENCES authors (id) ON DELETE CASCADE,
    title text, body text, created timestamptz DEFAULT now(), ints int[], nums numeric[]);
CREATE INDEX posts_author ON posts (author_id);
CREATE VIEW author_posts AS
    SELECT a.name, count(p.id) AS posts FROM authors a
    LEFT JOIN posts p ON p.author_id = a.id GROUP BY a.name;
CREATE SCHEMA other;
CREATE TABLE other."Mixed Case" (k text PRIMARY KEY, v jsonb);
CREATE SEQUENCE standalone_seq START 100;
SELECT nextval('standalone_seq'), nextval('standalone_seq'), nextval('standalone_seq');
"""

AUTHORS = [
    ("Ada", "mathematician\nand writer", ["math", "poetry"], '{"langs": ["en"], "n": 1}',
     b"\x00\x01\x02\xff", "2024-01-15 10:00:00+02", "12345678901234567890.1234567891", 1.5,
     True, "1815-12-10", "1 day 02:03:04"),
    ("Łukasz 🚀 中文 שלום", "", [], '{"nested": {"deep": [1, {"x": null}]}, "ü": "ß"}',
     b"", "1999-12-31 23:59:59.999999+00", "-0.0000000001", -0.0, False, "2000-02-29",
     "-3 hours"),
    ("Nulls", None, None, None, None, None, None, None, None, None, None),
    ("Array nulls", "x", ["a", None, "c"], "[]", bytes(range(256)), "infinity", "0",
     float("inf"), None, "infinity", "0"),
]


async def fresh_pg_database(admin_uri: str, database: str) -> asyncpg.Connection:
    """(Re)create an empty database and connect to it."""
    admin = await asyncpg.connect(admin_uri)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    return await asyncpg.connect(admin_uri.rsplit("/", 1)[0] + "/" + database)


async def create_pg_database(admin_uri: str, database: str, posts: int = 500) -> None:
    conn = await fresh_pg_database(admin_uri, database)
    try:
        await conn.execute(PG_SCHEMA)
        for row in AUTHORS:
            await conn.execute(
                "INSERT INTO authors (name, bio, tags, meta, avatar, joined, rating, score,"
                " active, born, nap) VALUES ($1, $2, $3, $4::text::jsonb, $5,"
                " $6::text::timestamptz, $7::text::numeric, $8, $9, $10::text::date,"
                " $11::text::interval)",
                row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                row[9], row[10])
        await conn.execute(
            "INSERT INTO posts (author_id, title, body, ints, nums) "
            "SELECT 1 + g % 4, 'title ' || g, repeat('body ' || g || ' ', g % 13), "
            "ARRAY[g, NULL, -g], ARRAY[g / 7.0, 1e-20] FROM generate_series(1, $1) g", posts)
        await conn.execute("""INSERT INTO other."Mixed Case" VALUES
            ('a', '{"v": 1}'), ('b"quote', 'null'), ('c''apos', '"str"')""")
    finally:
        await conn.close()


async def pg_snapshot(uri: str) -> dict[str, Any]:
    """Every row of every table, ordered, plus sequences, views, indexes and foreign keys."""
    conn = await asyncpg.connect(uri)
    try:
        rows = {}
        for table, order in (("authors", "id"), ("posts", "id"), ('other."Mixed Case"', "k")):
            records = await conn.fetch(f"SELECT * FROM {table} ORDER BY {order}")
            rows[table] = [tuple(r.values()) for r in records]
        return {
            "rows": rows,
            "sequences": {r["sequencename"]: r["last_value"] for r in await conn.fetch(
                "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1")},
            "views": [tuple(r.values()) for r in await conn.fetch(
                "SELECT * FROM author_posts ORDER BY name")],
            "indexes": sorted(r["indexdef"] for r in await conn.fetch(
                "SELECT indexdef FROM pg_indexes WHERE schemaname IN ('public', 'other')")),
            "foreign_keys": sorted(r["def"] for r in await conn.fetch(
                "SELECT conname || ' ' || pg_get_constraintdef(oid) AS def "
                "FROM pg_constraint WHERE contype = 'f'")),
        }
    finally:
        await conn.close()


def mongo_documents(count: int = 300) -> list[dict[str, Any]]:
    """Documents with every BSON type FerretDB v1 stores."""
    return [{
        "_id": ObjectId(),
        "seq": i,
        "int32": i - 150,
        "int64": Int64(2 ** 40 + i),
        "double": i / 3,
        "string": f"ünïcødé 🚀 {i}",
        "empty": "",
        "bool": i % 2 == 0,
        "null": None,
        "date": datetime(2024, 1, 1, 12, 0, i % 60, (i * 1000) % 1_000_000, tzinfo=UTC),
        "binary": Binary(bytes([i % 256]) * (i % 7)),
        "uuid": Binary(uuid.UUID(int=i).bytes, 4),
        "regex": Regex(f"^item{i}$", "i"),
        "timestamp": Timestamp(1_700_000_000 + i, i % 5 + 1),
        "array": [i, "two", {"three": [3.0, None]}],  # FerretDB v1: no arrays in arrays
        "nested": {"level1": {"level2": {"values": list(range(i % 5)), "flag": False}}},
    } for i in range(count)]


async def create_mongo_database(uri: str, database: str, count: int = 300) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        await client.drop_database(database)
        db = client[database]
        await db.items.insert_many(mongo_documents(count))
        await db.items.create_indexes([
            IndexModel([("seq", ASCENDING)], unique=True, name="seq_unique"),
            IndexModel([("string", ASCENDING), ("int64", DESCENDING)], name="string_int64"),
        ])
        await db.people.insert_many([{"name": f"p{i}", "tags": ["a", "b"][: i % 3]}
                                     for i in range(50)])
        await db.create_collection("empty")
    finally:
        await client.close()


async def mongo_snapshot(uri: str, database: str) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = client[database]
        out: dict[str, Any] = {}
        for name in sorted(await db.list_collection_names()):
            docs = await db[name].find({}).sort("_id", 1).to_list(None)
            indexes = {k: (v["key"], v.get("unique", False))
                       for k, v in (await db[name].index_information()).items()}
            out[name] = {"docs": docs, "indexes": indexes}
        return out
    finally:
        await client.close()


async def create_big_pg_database(admin_uri: str, database: str, rows: int = 300_000) -> None:
    """About 30 MB of text that compresses about 2:1, for faults that need a long dump."""
    conn = await fresh_pg_database(admin_uri, database)
    try:
        await conn.execute(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload"
            " FROM generate_series(1, $1) g", rows)
    finally:
        await conn.close()
