"""CLI commands for administrators: users and the audit log."""

import getpass
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

import typer
from pydantic import SecretStr

from app.cli.common import app, console, out, run_work, users
from app.config import Settings
from app.models.audit import AuditFilter, AuditOutcome
from app.models.user import PasswordReset, Role, User, UserCreate, UserUpdate
from app.services.access import auth as auth_service
from app.services.access import users as user_service
from app.services.jobs.runner import JobRunner
from app.services.ops import audit as audit_service


@users.command("create")
def user_create(username: str, role: Role = Role.viewer, email: str | None = None,
                name: str | None = None) -> None:
    """Create a user; the password is read from the terminal or standard input."""
    password = getpass.getpass("Password: ")

    async def work(settings: Settings, runner: JobRunner) -> int:
        user = await auth_service.create_user(UserCreate(
            username=username, password=SecretStr(password), email=email, name=name,
            role=role))
        out.print(f"created {user.username} ({user.role.value})")
        return 0

    run_work(work)


def _change_user(username: str, change: Callable[[User], Awaitable[str]]) -> None:
    """Find the user (any case), apply change, print what it says; no self/actor checks."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        out.print(await change(await user_service.get_user_by_name(username)))
        return 0

    run_work(work)


def _update_user(username: str, update: UserUpdate, said: Callable[[User], str]) -> None:
    async def change(user: User) -> str:
        return said(await user_service.update_user(user, update, None))

    _change_user(username, change)


@users.command("disable")
def user_disable(username: str) -> None:
    """Disable a user and revoke its tokens (not the last active superadmin)."""
    _update_user(username, UserUpdate(active=False), lambda u: f"disabled {u.username}")


@users.command("enable")
def user_enable(username: str) -> None:
    """Enable a disabled user."""
    _update_user(username, UserUpdate(active=True), lambda u: f"enabled {u.username}")


@users.command("set-role")
def user_set_role(username: str, role: Role) -> None:
    """Change a user's role (the last active superadmin keeps its role)."""
    _update_user(username, UserUpdate(role=role),
                 lambda u: f"{u.username} is now {u.role.value}")


@users.command("reset-password")
def user_reset_password(username: str) -> None:
    """Set a new password (read from the terminal or standard input); revokes its tokens."""
    password = PasswordReset(password=SecretStr(getpass.getpass("New password: "))).password

    async def change(user: User) -> str:
        done = await user_service.reset_password(user, password.get_secret_value())
        return f"password of {done.username} reset; its tokens are revoked"

    _change_user(username, change)


@users.command("revoke")
def user_revoke(username: str) -> None:
    """Revoke every token issued to a user so far."""

    async def change(user: User) -> str:
        done = await user_service.revoke_tokens(user)
        return f"tokens of {done.username} revoked"

    _change_user(username, change)


@users.command("delete")
def user_delete(username: str, yes: Annotated[bool, typer.Option(
        "--yes", help="do not ask for confirmation")] = False) -> None:
    """Delete a user (not the last active superadmin)."""
    if not yes:
        typer.confirm(f"Delete user {username}?", abort=True)

    async def change(user: User) -> str:
        await user_service.delete_user(user, None)
        return f"deleted {user.username}"

    _change_user(username, change)


audit_cli = typer.Typer(help="The audit log: check its hash chain, export, prune.",
                        no_args_is_help=True)
app.add_typer(audit_cli, name="audit")


@audit_cli.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit code 1 when a record was edited or deleted."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        report = await audit_service.verify_chain()
        if report.ok:
            out.print(f"audit log intact: {report.message}; newest record {report.last_seq} "
                      f"hash {report.last_hash}")
            return 0
        console.print(f"[red]audit log broken at record {report.broken_seq}:[/red] "
                      f"{report.message}")
        return 1

    run_work(work)


@audit_cli.command("export")
def audit_export(
    export_format: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    output: Annotated[str | None, typer.Option(help="file to write (default: stdout)")] = None,
    user: Annotated[str | None, typer.Option(help="username or user id")] = None,
    action: Annotated[str | None, typer.Option(help="substring of the action")] = None,
    outcome: Annotated[AuditOutcome | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option("--from", help="UTC")] = None,
    until: Annotated[datetime | None, typer.Option("--to", help="UTC")] = None,
) -> None:
    """Write the audit records, oldest first, as JSON lines or CSV."""
    if export_format not in ("jsonl", "csv"):
        console.print("[red]error:[/red] --format must be jsonl or csv")
        raise typer.Exit(2)

    async def work(settings: Settings, runner: JobRunner) -> int:
        query = audit_service.audit_query(AuditFilter.model_validate(
            {"user": user, "action": action, "outcome": outcome, "from": since, "to": until}))
        with open(output, "wb") if output else open(sys.stdout.fileno(), "wb",
                                                    closefd=False) as sink:
            async for chunk in audit_service.export_records(query, export_format):
                sink.write(chunk)
        return 0

    run_work(work)


@audit_cli.command("prune")
def audit_prune() -> None:
    """Delete audit records older than audit.retention_days (the chain stays verifiable)."""

    async def work(settings: Settings, runner: JobRunner) -> int:
        out.print(f"{await audit_service.prune_audit(settings)} audit records pruned")
        return 0

    run_work(work)


