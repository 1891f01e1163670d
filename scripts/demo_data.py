"""Create the demo PostgreSQL and MongoDB databases that `make run` backs up.

Idempotent: existing demo databases are left as they are.
"""

import asyncio
import os
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pymongo import AsyncMongoClient

PG_URI = os.environ.get("BACKVAULT_PG_URI", "postgresql://backvault:backvault@127.0.0.1:55432/postgres")
MONGO_URI = os.environ.get("BACKVAULT_MONGO_URI", "mongodb://127.0.0.1:57017/")
DEMO_DB = "demo"


async def seed_postgres() -> None:
    admin = await asyncpg.connect(PG_URI)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DEMO_DB)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{DEMO_DB}"')
    finally:
        await admin.close()
    demo_uri = urlunsplit(urlsplit(PG_URI)._replace(path=f"/{DEMO_DB}"))
    conn = await asyncpg.connect(demo_uri)
    try:
        if await conn.fetchval("SELECT to_regclass('public.orders')") is not None:
            print("demo PostgreSQL database already present")  # noqa: T201
            return
        await conn.execute("""
            CREATE TABLE customers (
                id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE,
                tags text[], profile jsonb, created_at timestamptz DEFAULT now());
            CREATE TABLE orders (
                id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id),
                total numeric(12, 2) NOT NULL, items jsonb, placed_at timestamptz DEFAULT now());
            CREATE INDEX orders_customer ON orders (customer_id);
            CREATE VIEW customer_totals AS
                SELECT c.name, sum(o.total) AS total FROM customers c
                JOIN orders o ON o.customer_id = c.id GROUP BY c.name;
            INSERT INTO customers (name, email, tags, profile)
                SELECT 'customer ' || g, 'c' || g || '@example.com', ARRAY['tier' || g % 3],
                       jsonb_build_object('city', 'City ' || g % 17, 'score', g * 7 % 100)
                FROM generate_series(1, 200) g;
            INSERT INTO orders (customer_id, total, items)
                SELECT 1 + g % 200, (g * 13 % 10000) / 100.0,
                       jsonb_build_array(
                           jsonb_build_object('sku', 'SKU-' || g % 50, 'qty', 1 + g % 4))
                FROM generate_series(1, 2000) g;
        """)
        print("demo PostgreSQL database created: customers 200, orders 2000")  # noqa: T201
    finally:
        await conn.close()


async def seed_mongo() -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(MONGO_URI)
    try:
        db = client[DEMO_DB]
        if await db.posts.count_documents({}) > 0:
            print("demo MongoDB database already present")  # noqa: T201
            return
        await db.users.insert_many(
            [{"handle": f"user{i}", "address": f"SP{i:038d}", "followers": i * 3}
             for i in range(100)])
        await db.posts.insert_many(
            [{"author": f"user{i % 100}", "title": f"Post {i}", "body": "lorem ipsum " * (i % 20),
              "likes": i % 37} for i in range(1000)])
        await db.posts.create_index("author")
        print("demo MongoDB database created: users 100, posts 1000")  # noqa: T201
    finally:
        await client.close()


async def main() -> None:
    await seed_postgres()
    await seed_mongo()


if __name__ == "__main__":
    asyncio.run(main())
