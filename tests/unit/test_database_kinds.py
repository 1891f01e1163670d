"""The database kinds registry: one entry per source kind, and what each kind decides
(refused options, protected targets, version warnings, the manifest's restore command)."""

import pytest
from pydantic import SecretStr

from app.config import Settings, SourceKind, SourceSettings
from app.errors import InvalidInputError
from app.models.backup import BackupKind
from app.models.requests import DatabaseBackupCreate
from app.services.databases.backup import check_request
from app.services.databases.kinds import KINDS, kind_of, kind_of_format
from app.services.databases.manifest import restore_command
from app.services.databases.registry import KIND_PACKAGES, facts_of, kind_facts
from app.services.databases.restore import protected_reason


def settings() -> Settings:
    sources = [SourceSettings(name=name, kind=SourceKind(kind), uri=SecretStr(uri))
               for name, kind, uri in (("pg", "postgres", "postgresql://u@h/shop"),
                                       ("pg2", "postgres", "postgresql://u@h/Billing"),
                                       ("mg", "mongodb", "mongodb://h/app"),
                                       ("mg2", "mongodb", "mongodb://h/Users"))]
    return Settings(_env_file=None, sources=sources)


def source_named(name: str) -> SourceSettings:
    found = settings().source(name)
    assert found is not None
    return found


def test_every_source_kind_has_one_database_kind_with_its_own_format() -> None:
    assert set(KINDS) == set(SourceKind)
    assert {k.format_name for k in KINDS.values()} == {"pgdump", "mongoarchive"}
    for source_kind, kind in KINDS.items():
        assert kind.backup_kind.value == source_kind.value
        assert kind_of(kind.backup_kind) is kind
        assert kind_of_format(kind.format_name) is kind


def test_source_and_backup_kinds_come_from_the_registry_alone() -> None:
    names = [f.name for f in kind_facts()]
    assert names == list(KIND_PACKAGES) == [k.value for k in SourceKind]
    assert [k.value for k in BackupKind] == [*names, "content"]
    for facts in kind_facts():
        assert facts_of(facts.name) is facts
        # A URI of another kind's scheme is refused, one of its own taken.
        for scheme in facts.uri_schemes:
            source = SourceSettings(name="s", kind=SourceKind(facts.name),
                                    uri=SecretStr(f"{scheme}://h"))
            assert source.database_name() == facts.default_database
        other = next(f for f in kind_facts() if f is not facts)
        with pytest.raises(ValueError, match="URI must start with"):
            SourceSettings(name="s", kind=SourceKind(facts.name),
                           uri=SecretStr(f"{min(other.uri_schemes)}://h/db"))


@pytest.mark.parametrize(("source", "body", "refused"), [
    ("pg", {"collections": ["c"], "allowPartial": True}, ["collections", "allowPartial"]),
    ("mg", {"schemaOnly": True, "tables": ["t"]}, ["schemaOnly", "tables"]),
])
def test_options_of_the_other_kind_are_refused_by_name(source: str, body: dict[str, object],
                                                        refused: list[str]) -> None:
    request = DatabaseBackupCreate.model_validate({"source": source, **body})
    kind = source_named(source).kind
    with pytest.raises(InvalidInputError) as caught:
        check_request(settings(), request)
    assert caught.value.message == f"{', '.join(refused)} cannot be used with a {kind} source"
    assert [d["field"] for d in caught.value.details] == refused


def test_options_of_the_sources_own_kind_are_accepted() -> None:
    for source, body in (("pg", {"schemaOnly": True, "tables": ["t"]}),
                         ("mg", {"collections": ["c"], "allowPartial": True})):
        request = DatabaseBackupCreate.model_validate({"source": source, **body})
        assert check_request(settings(), request).name == source


def test_mongodb_targets_are_compared_case_insensitively() -> None:
    s = settings()
    mongo, pg = source_named("mg"), source_named("pg")
    assert protected_reason(s, mongo, "BackVault") == "it is Backvault's own catalog database"
    assert protected_reason(s, mongo, "ADMIN") == "it is a mongodb system database"
    assert protected_reason(s, mongo, "users") == "it is the database of source 'mg2'"
    assert protected_reason(s, mongo, "fresh") is None
    # PostgreSQL names are case-sensitive, and the catalog is not on a PostgreSQL server.
    assert protected_reason(s, pg, "backvault") is None
    assert protected_reason(s, pg, "template1") == "it is a postgres system database"
    assert protected_reason(s, pg, "Template1") is None
    assert protected_reason(s, pg, "Billing") == "it is the database of source 'pg2'"
    assert protected_reason(s, pg, "billing") is None


def test_only_postgres_warns_about_restoring_into_an_older_server() -> None:
    postgres, mongodb = kind_of(SourceKind("postgres")), kind_of(SourceKind("mongodb"))
    assert postgres.compatibility_warning("16.2", "15.6") == (
        "the backup comes from PostgreSQL 16; the target runs 15, and pg_restore into an "
        "older server may fail")
    assert postgres.compatibility_warning("15.6", "16.2") is None
    assert postgres.compatibility_warning(None, "15.6") is None
    assert mongodb.compatibility_warning("7.0.1", "5.0.0") is None


def test_restore_commands_end_with_the_kinds_stock_tool() -> None:
    assert restore_command(["pgdump", "zst", "age"], "x.pgdump.zst.age", "shop") == (
        "createdb -h HOST -p PORT -U USER -T template0 NEW_DB && age -d -i key.txt "
        "x.pgdump.zst.age | zstd -d -c | pg_restore --no-owner -h HOST -p PORT -U USER "
        "-d NEW_DB")
    assert restore_command(["pgdump"], "x.pgdump", "shop") == (
        "createdb -h HOST -p PORT -U USER -T template0 NEW_DB && pg_restore --no-owner "
        "-h HOST -p PORT -U USER -d NEW_DB x.pgdump")
    assert restore_command(["mongoarchive", "zst"], "x.mongoarchive.zst", "my db") == (
        "zstd -d -c x.mongoarchive.zst | mongorestore --uri='mongodb://USER@HOST:PORT/' "
        "--archive --nsFrom='my db.*' --nsTo='NEW_DB.*'")
    assert restore_command(["mongoarchive"], "x.mongoarchive", "app") == (
        "mongorestore --uri='mongodb://USER@HOST:PORT/' --archive=x.mongoarchive "
        "--nsFrom='app.*' --nsTo='NEW_DB.*'")


def test_backup_kinds_of_content_have_no_database_kind() -> None:
    with pytest.raises(ValueError, match="content"):
        kind_of(BackupKind.content)
