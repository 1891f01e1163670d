"""Settings: defaults from the seeds, environment parsing, validation, secrets."""

import json
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from app.config import Settings, SourceKind, public_view

ROOT = Path(__file__).resolve().parents[2]
RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def load(**kwargs: object) -> Settings:
    return Settings(_env_file=None, **kwargs)  # type: ignore[arg-type]


def test_defaults_are_the_seed_documents_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("BACKUP_"):
            monkeypatch.delenv(name)
    s = load()
    assert (s.schedules.daily, s.schedules.weekly, s.schedules.monthly, s.schedules.cleanup) == (
        "0 2 * * *", "0 3 * * 0", "0 4 1 * *", "0 5 * * 0")
    assert (s.retention.days, s.retention.max_count, s.retention.min_count) == (30, 30, 3)
    assert (s.limits.max_size_mb, s.limits.timeout_seconds, s.limits.max_concurrent_jobs) == (
        1000, 3600, 2)
    assert (s.content.concurrency, s.content.timeout_seconds, s.content.retries) == (3, 30, 3)
    assert s.content.max_file_size == 104857600
    assert (s.compression.algorithm, s.compression.chosen_level) == ("zstd", 2)
    assert s.system.timezone == "UTC"
    assert s.system.enabled
    assert not s.encryption.enabled


def test_environment_variables_are_read_by_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUP_SYSTEM__TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("BACKUP_STORAGE__BACKEND", "s3")
    monkeypatch.setenv("BACKUP_STORAGE__S3_BUCKET", "nightly")
    monkeypatch.setenv("BACKUP_STORAGE__S3_SECRET_KEY", "s3-secret-value")
    monkeypatch.setenv("BACKUP_COMPRESSION__ALGORITHM", "gzip")
    monkeypatch.setenv("BACKUP_COMPRESSION__LEVEL", "6")
    monkeypatch.setenv("BACKUP_ENCRYPTION__RECIPIENTS", json.dumps([RECIPIENT]))
    monkeypatch.setenv("BACKUP_LIMITS__MAX_CONCURRENT_JOBS", "4")
    monkeypatch.setenv("BACKUP_CONTENT__IPFS_GATEWAYS", '["http://127.0.0.1:8080"]')
    monkeypatch.setenv("BACKUP_SOURCES", json.dumps([
        {"name": "app-pg", "kind": "postgres", "uri": "postgresql://u:pgsecretpw@db.internal/app"}]))
    s = load()
    assert s.system.timezone == "Europe/Paris"
    assert s.storage.backend == "s3"
    assert s.storage.s3_bucket == "nightly"
    assert isinstance(s.storage.s3_secret_key, SecretStr)
    assert s.storage.s3_secret_key.get_secret_value() == "s3-secret-value"
    assert (s.compression.algorithm, s.compression.chosen_level) == ("gzip", 6)
    assert s.encryption.enabled
    assert s.encryption.recipients == [RECIPIENT]
    assert s.limits.max_concurrent_jobs == 4
    assert [str(u) for u in s.content.ipfs_gateways] == ["http://127.0.0.1:8080/"]
    source = s.source("app-pg")
    assert source is not None
    assert source.kind is SourceKind("postgres")
    assert source.database_name() == "app"
    assert "pgsecretpw" not in repr(s)
    assert "s3-secret-value" not in repr(s)


def test_env_example_parses_and_documents_every_setting() -> None:
    s = Settings(_env_file=ROOT / ".env.example")
    assert [src.name for src in s.all_sources()] == ["demo-pg", "demo-mongo", "catalog"]
    text = (ROOT / ".env.example").read_text()
    for group_name, group in Settings.model_fields.items():
        annotation = group.annotation
        fields = getattr(annotation, "model_fields", None)
        if fields is None:
            assert f"BACKUP_{group_name.upper()}=" in text
            continue
        for name in fields:
            assert f"BACKUP_{group_name.upper()}__{name.upper()}=" in text, (group_name, name)


def test_catalog_is_a_default_source() -> None:
    s = load(catalog={"database": "svc"})
    catalog = s.source("catalog")
    assert catalog is not None
    assert catalog.kind is SourceKind("mongodb")
    assert catalog.database_name() == "svc"
    assert load(catalog={"source_name": ""}).source("catalog") is None


def test_compression_level_defaults_per_algorithm() -> None:
    assert load(compression={"algorithm": "gzip"}).compression.chosen_level == 6
    assert load(compression={"algorithm": "zstd", "level": ""}).compression.chosen_level == 2
    assert load(compression={"algorithm": "zstd", "level": 9}).compression.chosen_level == 9


@pytest.mark.parametrize(("groups", "message"), [
    ({"schedules": {"daily": "0 25 * * *"}}, "hour"),
    ({"schedules": {"weekly": "0 3 * * 9"}}, "day_of_week"),
    ({"system": {"timezone": "Mars/Olympus"}}, "unknown timezone"),
    ({"compression": {"algorithm": "gzip", "level": 12}}, "between 1 and 9"),
    ({"compression": {"algorithm": "zstd", "level": 30}}, "between 1 and 22"),
    ({"retention": {"min_count": 5, "max_count": 2}}, "min_count"),
    ({"retention": {"days": 400}}, "less than or equal to 365"),
    ({"storage": {"backend": "s3"}}, "s3_bucket"),
    ({"encryption": {"recipients": ["not-an-age-key"]}}, "age1"),
    ({"sources": [{"name": "x", "kind": "postgres", "uri": "mongodb://h/db"}]}, "postgresql://"),
    ({"sources": [{"name": "Bad Name", "kind": "mongodb", "uri": "mongodb://h/db"}]}, "pattern"),
    ({"sources": [{"name": "catalog", "kind": "mongodb", "uri": "mongodb://h/db"}]}, "unique"),
])
def test_bad_settings_are_refused_with_a_clear_message(groups: dict[str, object],
                                                       message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load(**groups)


def test_placeholder_secrets_are_refused_outside_development() -> None:
    load(system={"environment": "development"})  # placeholders are fine for local use
    with pytest.raises(ValidationError) as err:
        load(system={"environment": "production"})
    text = str(err.value)
    assert "BACKUP_AUTH__JWT_SECRET" in text
    assert "BACKUP_AUTH__BOOTSTRAP_PASSWORD" in text
    with pytest.raises(ValidationError, match="S3_SECRET_KEY"):
        load(system={"environment": "production"},
             auth={"jwt_secret": "k" * 40, "bootstrap_password": "a-real-password-123"},
             storage={"s3_secret_key": "your-secret-key"})
    box = {"name": "box", "kind": "sftp", "sftp_host": "h", "sftp_user": "u", "sftp_dir": "d",
           "sftp_known_host": "h ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA",
           "sftp_private_key": "a key", "sftp_private_key_passphrase": "changeme"}
    with pytest.raises(ValidationError, match=r"\(box\) sftp_private_key_passphrase"):
        load(system={"environment": "production"},
             auth={"jwt_secret": "k" * 40, "bootstrap_password": "a-real-password-123"},
             storage={"targets": [box]})
    with pytest.raises(ValidationError, match="at least 32"):
        load(system={"environment": "test"}, auth={"jwt_secret": "short-but-not-placeholder"})
    ok = load(system={"environment": "production"},
              auth={"jwt_secret": "k" * 40, "bootstrap_password": "a-real-password-123"})
    assert ok.system.environment == "production"


def test_public_view_holds_no_secret() -> None:
    s = load(
        catalog={"mongo_uri": "mongodb://cat:catpw@h/"},
        storage={"s3_access_key": "AKIAEXAMPLEKEY", "s3_secret_key": "s3-very-secret"},
        notifications={"urls": ["mailto://u:mailpw@smtp.example.com"]},
        auth={"jwt_secret": "jwt-very-secret-" + "z" * 20, "bootstrap_password": "boot-pw-123"},
        sources=[{"name": "p", "kind": "postgres", "uri": "postgresql://u:pgpw@h/db"}],
    )
    view = public_view(s)
    view["sources"] = [public_view(src) for src in s.all_sources()]
    text = json.dumps(view)
    for secret in ("catpw", "AKIAEXAMPLEKEY", "s3-very-secret", "mailpw", "jwt-very-secret",
                   "boot-pw-123", "pgpw"):
        assert secret not in text
    assert view["storage"]["s3_secret_key"] == "<redacted>"
    assert view["storage"]["s3_bucket"] is None
    assert view["schedules"]["daily"] == "0 2 * * *"


def test_a_settings_error_never_prints_the_input() -> None:
    # The input of a bad source or target holds its URI, keys and tokens.
    with pytest.raises(ValueError, match="needs s3_bucket") as caught:
        Settings.model_validate({"storage": {"targets": [
            {"name": "x", "kind": "s3", "s3_secret_key": "S3-SECRET-VALUE"}]}})
    assert "S3-SECRET-VALUE" not in str(caught.value)
    with pytest.raises(ValueError, match="URI must start with") as caught:
        Settings.model_validate({"sources": [
            {"name": "s", "kind": "postgres", "uri": "mongodb://u:URI-PASSWORD@h/db"}]})
    assert "URI-PASSWORD" not in str(caught.value)


def test_urls_are_shown_without_their_credentials() -> None:
    # Gateway, Kubo and hub URLs may carry user:password (httpx sends it as basic auth).
    settings = Settings.model_validate({"content": {
        "ipfs_gateways": ["http://g:GW-PASSWORD@127.0.0.1:58080"],
        "kubo_api": "http://k:KUBO-PASSWORD@127.0.0.1:55001"}})
    shown = str(public_view(settings))
    assert "GW-PASSWORD" not in shown
    assert "KUBO-PASSWORD" not in shown
    assert "http://127.0.0.1:58080/" in shown
