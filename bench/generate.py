"""Benchmark data: a PostgreSQL database of realistic entropy (words, numbers, jsonb,
timestamps; not pgbench filler) of about the requested size, and a MongoDB one."""

import asyncio
import random
from typing import Any

import asyncpg
from pymongo import AsyncMongoClient

WORDS = (
    "the of and to in is was for on that with as by at from his her it an were are which "
    "this be or had not but what all when we there can been has more if will one would "
    "so no out up said do into time only could new about other some them these two may "
    "first then do any like my now over such our man me even most made after also did "
    "many before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own see men "
    "work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three "
    "order invoice payment shipped customer account balance refund pending delivered "
    "warehouse berlin tokyo lagos lima oslo quebec mumbai sydney cairo denver"
).split()

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id bigserial PRIMARY KEY, user_id int NOT NULL, kind text NOT NULL,
    amount numeric(12, 2), created timestamptz NOT NULL, payload jsonb, note text);
CREATE TABLE IF NOT EXISTS users (
    id int PRIMARY KEY, email text, name text, city text, signup timestamptz, prefs jsonb);
"""

EVENTS_BATCH = """
INSERT INTO events (user_id, kind, amount, created, payload, note)
SELECT (random() * 1e6)::int,
       (ARRAY['click','view','purchase','share','refund','login'])[1 + floor(random() * 6)],
       round((random() * 2000)::numeric, 2),
       timestamptz '2025-01-01' + random() * interval '600 days',
       jsonb_build_object(
           'ip', (random() * 255)::int || '.' || (random() * 255)::int || '.'
                 || (random() * 255)::int || '.' || (random() * 255)::int,
           'device', (ARRAY['ios','android','web','desktop'])[1 + floor(random() * 4)],
           'score', round(random()::numeric, 4),
           'items', jsonb_build_array((random() * 100)::int, (random() * 100)::int),
           'session', md5(random()::text)),
       array_to_string(ARRAY(
           SELECT ($1::text[])[1 + floor(random() * array_length($1::text[], 1))]
           FROM generate_series(1, 4 + (g % 24))), ' ')
FROM generate_series(1, $2) g
"""


async def pg_size(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_database_size(current_database())"))


async def generate_postgres(admin_uri: str, database: str, target_bytes: int) -> int:
    """Fill `database` until it holds about target_bytes; returns its size."""
    admin = await asyncpg.connect(admin_uri)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(admin_uri.rsplit("/", 1)[0] + "/" + database)
    try:
        await conn.execute(SCHEMA)
        if not await conn.fetchval("SELECT count(*) FROM users"):
            await conn.execute(
                "INSERT INTO users SELECT g, 'user' || g || '@example.com', 'User ' || g,"
                " (ARRAY['Berlin','Tokyo','Lagos','Lima','Oslo'])[1 + g % 5],"
                " timestamptz '2020-01-01' + g * interval '1 minute',"
                " jsonb_build_object('lang', 'en', 'tz', g % 24, 'news', g % 2 = 0)"
                " FROM generate_series(1, 200000) g")
        while (size := await pg_size(conn)) < target_bytes:
            await conn.execute(EVENTS_BATCH, WORDS, 200_000)
        # Hint bits, statistics and dirty buffers settled now, not during the first rounds.
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
        return size
    finally:
        await conn.close()


def mongo_batch(rng: random.Random, start: int, count: int) -> list[dict[str, Any]]:
    return [{
        "seq": i,
        "user": rng.randrange(1_000_000),
        "kind": rng.choice(["click", "view", "purchase", "share"]),
        "amount": round(rng.random() * 2000, 2),
        "tags": rng.sample(WORDS, 3),
        "note": " ".join(rng.choice(WORDS) for _ in range(4 + i % 24)),
        "meta": {"device": rng.choice(["ios", "android", "web"]), "score": rng.random()},
    } for i in range(start, start + count)]


async def generate_mongo(uri: str, database: str, target_bytes: int) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        db = client[database]
        rng = random.Random(7)
        count = await db.events.count_documents({})
        approx = 330  # bytes per document, measured
        while count * approx < target_bytes:
            await db.events.insert_many(mongo_batch(rng, count, 5000), ordered=False)
            count += 5000
        return count * approx
    finally:
        await client.close()


if __name__ == "__main__":
    import sys

    asyncio.run(generate_postgres(sys.argv[1], sys.argv[2], int(float(sys.argv[3]) * 2**30)))
