"""Gaia content: a hub whose read prefix is a MinIO bucket; files hashed, signatures checked,
unchanged files not fetched again, and the backup exported as a tree."""

import hashlib
import io
import json
import tarfile
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import aioboto3
import ecdsa
import httpx
import pytest
from ecdsa.util import sigencode_der
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.config import Settings
from app.models.content import ContentObject
from app.services.content.gaia import address_of
from tests.support.accounts import Account
from tests.support.jobs import wait_job
from tests.support.settings import GAIA_HUB, MONGO_URI, RUN, S3_ACCESS, S3_ENDPOINT, S3_SECRET

BUCKET = f"gaia-{RUN}"
READ_PREFIX = f"{S3_ENDPOINT}/{BUCKET}/"


@pytest.fixture(scope="module")
def hub() -> Iterator[None]:
    """The hub's /hub_info, pointing reads at the bucket."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"read_url_prefix": READ_PREFIX, "challenge_text": "x"}).encode()
            self.send_response(200 if self.path == "/hub_info" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", urlsplit(GAIA_HUB).port or 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield
    server.shutdown()
    server.server_close()


def signed(key: ecdsa.SigningKey, data: bytes) -> bytes:
    signature = key.sign_digest(hashlib.sha256(data).digest(), sigencode=sigencode_der)
    public = key.get_verifying_key().to_string("compressed")
    return json.dumps({"signature": signature.hex(), "publicKey": public.hex()}).encode()


@pytest.fixture(scope="module")
async def bucket(app: FastAPI) -> AsyncIterator[dict[str, bytes]]:
    """Files as a Gaia hub stores them: `address/path`, some with a `.sig` beside them."""
    owner = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    address = address_of(owner.get_verifying_key().to_string("compressed"))
    profile = json.dumps({"name": "Ada"}).encode()
    photo = bytes(range(256)) * 6000
    files = {
        f"{address}/profile.json": profile,
        f"{address}/profile.json.sig": signed(owner, profile),
        f"{address}/photos/cat.bin": photo,
        f"{address}/tampered.txt": b"changed after signing",
        f"{address}/tampered.txt.sig": signed(owner, b"what was signed"),
        "1BoatSLRHtKNngkdXEeobR76b53LETtpyT/notes.txt": b"someone else's",
        "1BoatSLRHtKNngkdXEeobR76b53LETtpyT/notes.txt.sig": signed(owner, b"someone else's"),
    }
    session = aioboto3.Session()
    async with session.client("s3", endpoint_url=S3_ENDPOINT, aws_access_key_id=S3_ACCESS,
                              aws_secret_access_key=S3_SECRET, region_name="us-east-1") as s3:
        await s3.create_bucket(Bucket=BUCKET)
        await s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"AWS": ["*"]},
                "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{BUCKET}/*"]}]}))
        for key, data in files.items():
            await s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        yield {"address": address.encode(), **files}
        for key in files:
            await s3.delete_object(Bucket=BUCKET, Key=key)
        await s3.delete_bucket(Bucket=BUCKET)


async def test_gaia_backup_is_verified_incremental_and_exportable(
        client: httpx.AsyncClient, admin: Account, superadmin: Account, settings: Settings,
        hub: None, bucket: dict[str, bytes]) -> None:
    address = bucket["address"].decode()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO_URI)
    files = mongo[settings.catalog.database]["app_files"]
    await files.delete_many({})
    await files.insert_many([
        {"gaia": f"{address}/profile.json"},
        {"gaia": f"{READ_PREFIX}{address}/photos/cat.bin"},
        {"gaia": f"{address}/tampered.txt"},
        {"gaia": "1BoatSLRHtKNngkdXEeobR76b53LETtpyT/notes.txt"},
        {"gaia": "http://169.254.169.254/latest/meta-data"},
    ])
    try:
        job = await wait_job(client, admin.headers, (await client.post(
            "/api/backups/content", json={"source": "gaia-files"}, headers=admin.headers)
            ).json()["id"])
        assert job["status"] == "completed", job
        assert (job["result"]["new"], job["result"]["failedItems"]) == (2, 3)
        assert job["result"]["partial"] is True
        backup_id = job["result"]["backupId"]
        backup = (await client.get(f"/api/backups/{backup_id}", headers=admin.headers)).json()
        assert backup["error"].startswith("partial: 3 of 5 items failed")
        items = {i["reference"].rsplit("/", 1)[-1]: i for i in (await client.get(
            f"/api/backups/{backup_id}/items", headers=admin.headers)).json()}
        assert items["profile.json"]["sha256"] == hashlib.sha256(
            bucket[f"{address}/profile.json"]).hexdigest()
        assert "signature check failed" in items["tampered.txt"]["error"]
        assert "not by the bucket's owner" in items["notes.txt"]["error"]
        assert "not under a configured Gaia hub" in items["meta-data"]["error"]
        objects = await ContentObject.find({"type": "gaia"}).count()

        again = await wait_job(client, admin.headers, (await client.post(
            "/api/backups/content", json={"source": "gaia-files"}, headers=admin.headers)
            ).json()["id"])
        assert (again["result"]["new"], again["result"]["existing"]) == (0, 2)
        assert await ContentObject.find({"type": "gaia"}).count() == objects

        exported = await client.get(f"/api/backups/{backup_id}/export.tar",
                                    headers=superadmin.headers)
        assert exported.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(exported.content)) as tar:
            names = sorted(tar.getnames())
            assert names == [f"{address}/photos/cat.bin", f"{address}/profile.json"]
            for name in names:
                member = tar.extractfile(name)
                assert member is not None
                assert member.read() == bucket[name]
    finally:
        await files.delete_many({})
        await mongo.close()
