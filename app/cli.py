"""The `backvault` command line."""

import asyncio
import getpass

import typer
import uvicorn
from pydantic import SecretStr
from rich.console import Console

from app.config import get_settings
from app.models.user import Role, UserCreate
from app.services import auth as auth_service
from app.services.catalog_db import open_catalog

app = typer.Typer(help="Backvault: backups of PostgreSQL, MongoDB, IPFS and Gaia.",
                  no_args_is_help=True)
users = typer.Typer(help="Manage API users.", no_args_is_help=True)
app.add_typer(users, name="user")
console = Console()


@app.command()
def serve(host: str | None = None, port: int | None = None, reload: bool = False) -> None:
    """Run the API server."""
    settings = get_settings()
    uvicorn.run("app.main:create_app", factory=True, host=host or settings.system.host,
                port=port or settings.system.port, reload=reload, log_level="warning")


@users.command("create")
def user_create(username: str, role: Role = Role.viewer, email: str | None = None,
                name: str | None = None) -> None:
    """Create a user; the password is read from the terminal or standard input."""
    password = getpass.getpass("Password: ")

    async def run() -> None:
        client = await open_catalog(get_settings())
        try:
            user = await auth_service.create_user(UserCreate(
                username=username, password=SecretStr(password), email=email, name=name, role=role))
        finally:
            await client.close()
        console.print(f"created {user.username} ({user.role.value})")

    asyncio.run(run())


def main() -> None:
    app()
