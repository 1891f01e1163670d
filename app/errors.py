"""Domain exceptions carrying a status code, and the one JSON error body."""

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, details: Any = None, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers


class NotFoundError(AppError):
    status_code = 404
    code = "not_found"


class ConflictError(AppError):
    status_code = 409
    code = "conflict"


class AuthenticationError(AppError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "Not authenticated", details: Any = None):
        super().__init__(message, details, headers={"WWW-Authenticate": "Bearer"})


class PermissionDeniedError(AppError):
    status_code = 403
    code = "forbidden"


class ConfirmationRequiredError(AppError):
    """A destructive action without `confirm` naming what it destroys."""

    status_code = 409
    code = "confirmation_required"


class InvalidInputError(AppError):
    status_code = 422
    code = "validation_error"


class BadRequestError(AppError):
    status_code = 400
    code = "bad_request"


class RequestTimeoutError(AppError):
    status_code = 408
    code = "request_timeout"


class PayloadTooLargeError(AppError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequestsError(AppError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int, details: Any = None):
        super().__init__(message, details, headers={"Retry-After": str(retry_after)})


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _field_path(loc: tuple[Any, ...]) -> str:
    # Drop the "body"/"query" prefix and pydantic's validator labels.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


def validation_details(errors: list[Any]) -> list[dict[str, Any]]:
    details = []
    for err in errors:
        message = str(err.get("msg", ""))
        message = message.removeprefix("Value error, ")
        details.append({"field": _field_path(tuple(err.get("loc", ()))), "message": message,
                        "type": err.get("type")})
    return details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, jsonable_encoder(exc.details)),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(list(exc.errors()))
        message = details[0]["message"] if len(details) == 1 else "Request validation failed"
        if len(details) == 1 and details[0]["field"]:
            message = f"{details[0]['field']}: {message}"
        return JSONResponse(error_body("validation_error", message, details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                 403: "forbidden"}
        return JSONResponse(error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RecursionError)
    async def _recursion(request: Request, exc: RecursionError) -> JSONResponse:
        if _raised_in_json(exc):
            return JSONResponse(error_body("bad_request", "Request body is nested too deeply"),
                                status_code=400)
        return _internal_error(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc)


def _raised_in_json(exc: BaseException) -> bool:
    """Whether the traceback passes through the json module (a too deeply nested body)."""
    tb = exc.__traceback__
    while tb is not None:
        if "/json/" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False


def _internal_error(request: Request, exc: BaseException) -> JSONResponse:
    # The body names nothing of the failure; the details go to the log only.
    try:
        log.error("unhandled error", path=request.url.path, error_type=type(exc).__name__,
                  exc_info=None if isinstance(exc, RecursionError) else exc)
    except Exception:  # the answer must not depend on logging working
        pass
    return JSONResponse(error_body("internal_error", "Internal server error"), status_code=500)
