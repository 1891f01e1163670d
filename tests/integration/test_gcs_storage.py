"""Google Cloud Storage targets against a real fake-gcs-server (and a local token
endpoint, since the emulator has no auth): the storage contract every kind passes, the
service-account token exchange, and GCS through its S3-compatible endpoint."""

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import Settings, StorageTargetSettings
from app.config.cloud_storage import service_account
from app.config.settings import public_view
from app.services.artifacts.stages import from_bytes
from app.services.storage import Storage, StorageTargets
from app.services.storage.gcs import CHUNK_SIZE, GcsStorage
from app.services.storage.s3 import S3Storage
from app.services.storage.wrappers import StorageWrapper
from tests.support import store_contract as contract
from tests.support.gcs_token import TokenServer, new_key, pem
from tests.support.settings import RUN
from tests.support.storage_targets import with_targets

GCS_ENDPOINT = os.environ.get("BACKVAULT_GCS_ENDPOINT", "http://127.0.0.1:50120")
BUCKET = "backvault-test"
pytestmark = pytest.mark.usefixtures("source_databases")


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenServer]:
    with TokenServer() as server:
        yield server


def gcs_kind(tokens: TokenServer) -> contract.StoreKind:
    prefix = f"t-{RUN}-{uuid.uuid4().hex[:8]}"
    account = tokens.service_account()
    other_key = new_key()

    def make(endpoint: str | None) -> Storage:
        return GcsStorage(BUCKET, prefix=prefix, endpoint_url=endpoint or GCS_ENDPOINT,
                          credentials=service_account(account))

    def target(name: str, endpoint: str | None) -> dict[str, Any]:
        return {"name": name, "kind": "gcs", "gcs_bucket": BUCKET, "gcs_prefix": prefix,
                "gcs_endpoint_url": endpoint or GCS_ENDPOINT, "gcs_credentials_json": account}

    def wrong() -> Storage:
        return GcsStorage(BUCKET, prefix=prefix, endpoint_url=GCS_ENDPOINT,
                          credentials=service_account(tokens.service_account(other_key)))

    # A line from the middle of the wrong key's PEM: no message may carry it.
    return contract.StoreKind(
        name="gcs", make=make, upstream_port=int(GCS_ENDPOINT.rsplit(":", 1)[1]),
        part_size=CHUNK_SIZE, target=target, wrong_credentials=wrong,
        wrong_secret=pem(other_key).splitlines()[5], pending=None)


@pytest.fixture
def kind(tokens: TokenServer) -> contract.StoreKind:
    return gcs_kind(tokens)


class TestContract(contract.StoreContract):
    """GCS: invisible until the last chunk; a left resumable session is invisible."""

    async def test_wrong_credentials(  # type: ignore[override]  # pytest passes fixtures by name
            self, kind: contract.StoreKind, tokens: TokenServer) -> None:
        refused = tokens.refused
        await contract.check_wrong_credentials(kind)
        assert tokens.refused > refused  # refused by the token endpoint, not by chance


async def test_one_token_serves_many_calls(tokens: TokenServer) -> None:
    """The service account's grant is checked by the token endpoint (RS256 by the key,
    issuer, audience, scope, an hour at most) and its token is reused, not re-fetched."""
    before = len(tokens.grants)
    store = gcs_kind(tokens).make(None)
    await store.prepare()
    await store.put("tok/a", from_bytes(b"a"))
    assert await store.stat("tok/a") is not None
    assert [o.key async for o in store.list_objects("tok/")] == ["tok/a"]
    await store.delete("tok/a")
    assert len(tokens.grants) == before + 1
    claims = tokens.grants[-1]
    assert claims["iss"] == tokens.email
    assert claims["aud"] == tokens.token_uri
    assert claims["scope"] == "https://www.googleapis.com/auth/devstorage.read_write"


def test_targets_need_their_fields(tokens: TokenServer) -> None:
    account = tokens.service_account()
    base = {"name": "g", "kind": "gcs", "gcs_bucket": BUCKET}
    assert StorageTargetSettings.model_validate({**base, "gcs_credentials_json": account})
    assert StorageTargetSettings.model_validate({**base, "gcs_endpoint_url": GCS_ENDPOINT})
    with pytest.raises(ValidationError, match="needs gcs_credentials_json"):
        StorageTargetSettings.model_validate(base)
    with pytest.raises(ValidationError, match="needs gcs_bucket"):
        StorageTargetSettings.model_validate({"name": "g", "kind": "gcs",
                                              "gcs_credentials_json": account})
    private_key = json.loads(account)["private_key"]
    broken = {
        "is not JSON": account[:-5],
        "must be a service account key": json.dumps({**json.loads(account), "type": "user"}),
        "lacks client_email": json.dumps({**json.loads(account), "client_email": ""}),
    }
    for message, value in broken.items():
        with pytest.raises(ValidationError, match=message) as caught:
            StorageTargetSettings.model_validate({**base, "gcs_credentials_json": value})
        assert private_key.splitlines()[3] not in str(caught.value)
    view = public_view(StorageTargetSettings.model_validate(
        {**base, "gcs_credentials_json": account}))
    assert view["gcs_credentials_json"] == "<redacted>"


def test_build_target_makes_a_wrapped_gcs_storage(settings: Settings,
                                                  tokens: TokenServer) -> None:
    ours = with_targets(settings, [gcs_kind(tokens).target("far", None)], default="far")
    store = StorageTargets.from_settings(ours).default
    assert store.name == "gcs"
    assert isinstance(store, StorageWrapper)
    inner = store.unwrapped()
    assert isinstance(inner, GcsStorage)
    assert inner.endpoint == GCS_ENDPOINT
    assert store.describe("a/b").startswith(f"gs://{BUCKET}/t-")
    real = GcsStorage.from_target(StorageTargetSettings.model_validate(
        {"name": "g", "kind": "gcs", "gcs_bucket": "b",
         "gcs_credentials_json": tokens.service_account()}), settings)
    assert real.endpoint == "https://storage.googleapis.com"


def test_gcs_through_its_s3_interoperability_endpoint(settings: Settings) -> None:
    """GCS also speaks the S3 API (XML API, HMAC keys, SigV4, path-style): the existing S3
    kind takes that endpoint as it is. Only the configuration can be shown here: no
    emulator serves GCS's XML multipart uploads (fake-gcs-server has none), and no test
    reaches Google."""
    target = {"name": "gcs-s3", "kind": "s3", "s3_bucket": "my-backups",
              "s3_endpoint_url": "https://storage.googleapis.com", "s3_region": "auto",
              "s3_access_key": "GOOG1EXAMPLEHMACACCESSID", "s3_secret_key": "hmac-secret",
              "s3_prefix": "backvault"}
    ours = with_targets(settings, [target], default="gcs-s3")
    wrapped = StorageTargets.from_settings(ours).default
    assert isinstance(wrapped, StorageWrapper)
    store = wrapped.unwrapped()
    assert isinstance(store, S3Storage)
    args = store._client_args
    assert args["endpoint_url"] == "https://storage.googleapis.com"
    assert args["region_name"] == "auto"
    assert args["config"].s3 == {"addressing_style": "path"}
    assert args["config"].signature_version == "s3v4"
    assert store.describe("x/y") == "s3://my-backups/backvault/x/y"
