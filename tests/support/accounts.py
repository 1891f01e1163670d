"""Test users: one of each role, each with a token."""

from dataclasses import dataclass

from app.models.user import User

TEST_PASSWORD = "correct horse battery staple"


@dataclass
class Account:
    user: User
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}
