"""The error answers of every route, written into the OpenAPI document.

Routes raise domain errors rendered by one handler, so FastAPI cannot see them;
the document is post-processed once: per route, the answers its dependencies,
path and method make possible, all with the one JSON error body.
"""

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.api import deps
from app.models.user import Role

READ_METHODS = {"GET", "HEAD", "OPTIONS"}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetail


def _role_checks() -> dict[Any, Role]:
    """The dependency functions behind the role aliases, and the role each needs."""
    aliases = {deps.CurrentUser: Role.viewer, deps.AdminUser: Role.admin,
               deps.SuperUser: Role.superadmin}
    return {alias.__metadata__[0].dependency: role for alias, role in aliases.items()}


def _needed_role(dependant: Dependant, checks: dict[Any, Role]) -> Role | None:
    found: Role | None = None
    for sub in dependant.dependencies:
        role = checks.get(sub.call) or _needed_role(sub, checks)
        if role is not None and (found is None or role.allows(found)):
            found = role
    return found


def _answers(route: APIRoute, checks: dict[Any, Role]) -> dict[int, str]:
    answers: dict[int, str] = {}
    role = _needed_role(route.dependant, checks)
    if role is not None:
        answers[401] = "Not authenticated, or the token is invalid, expired or revoked"
        if role is not Role.viewer:
            answers[403] = f"The user's role is below {role.value}"
    if "{" in route.path:
        answers[404] = "The resource named in the path does not exist"
    writes = bool((route.methods or set()) - READ_METHODS)
    if writes and role is not None:
        answers[409] = "The action conflicts with the resource's current state"
    if route.dependant.body_params or writes:
        answers[400] = "The body is not readable JSON or is nested too deeply"
        answers[408] = "The body did not arrive in time"
        answers[413] = "The request body is larger than the configured limit"
    answers[422] = "The input failed validation; `details` names each field"
    return answers


def _schema_with_errors(app: FastAPI, routers: list[APIRouter]) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorDetail"] = ErrorDetail.model_json_schema()
    components["ErrorBody"] = ErrorBody.model_json_schema(
        ref_template="#/components/schemas/{model}")
    components["ErrorBody"].pop("$defs", None)
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    checks = _role_checks()
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.path.startswith("/api"):
                continue
            path = schema["paths"].get(route.path, {})
            for method in route.methods or ():
                operation = path.get(method.lower())
                if operation is None:
                    continue
                answers = operation.setdefault("responses", {})
                for status, description in _answers(route, checks).items():
                    if str(status) not in answers or status == 422:
                        answers[str(status)] = {
                            "description": description,
                            "content": {"application/json": {"schema": ref}}}
    return schema


def document_errors(app: FastAPI, routers: list[APIRouter]) -> None:
    """Serve an OpenAPI document that lists each route's possible error answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _schema_with_errors(app, routers)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
