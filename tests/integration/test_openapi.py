"""The OpenAPI document lists each route's error answers with the one error body."""

from typing import Any

import httpx
from fastapi import FastAPI

WRITE_METHODS = {"post", "put", "patch", "delete"}


def _error_ref(answer: dict[str, Any]) -> str:
    schema: dict[str, Any] = answer["content"]["application/json"]["schema"]
    return str(schema.get("$ref", ""))


async def test_every_api_route_documents_its_error_answers(app: FastAPI,
                                                           client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    checked = 0
    for path, operations in spec["paths"].items():
        if not path.startswith("/api"):
            continue
        for method, operation in operations.items():
            answers = operation["responses"]
            where = f"{method.upper()} {path}"
            assert "422" in answers, where
            for status in (s for s in answers if s.startswith("4")):
                assert _error_ref(answers[status]).endswith("/ErrorBody"), (where, status)
            assert "401" in answers, where
            if "{" in path:
                assert "404" in answers, where
            if method in WRITE_METHODS:
                assert "413" in answers, where
                if path != "/api/auth/token":
                    assert "409" in answers, where
            checked += 1
    assert checked > 30


async def test_role_answers_follow_the_role_each_route_needs(app: FastAPI,
                                                              client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    # viewer routes cannot answer 403; admin and superadmin ones can.
    assert "403" not in paths["/api/backups"]["get"]["responses"]
    assert "403" in paths["/api/backups/database"]["post"]["responses"]
    assert "403" in paths["/api/backups/{backup_id}/restore"]["post"]["responses"]
    assert "403" in paths["/api/auth/users"]["get"]["responses"]
    login = paths["/api/auth/token"]["post"]["responses"]
    assert {"401", "429"} <= set(login)
    error = (await client.get("/openapi.json")).json()["components"]["schemas"]["ErrorBody"]
    assert error["properties"]["error"]["$ref"].endswith("/ErrorDetail")
