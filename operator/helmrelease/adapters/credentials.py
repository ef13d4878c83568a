"""The username/password pair every source adapter takes: registries, Helm repositories, git over HTTPS.

One type for one thing, so a Secret read once can be handed to any of them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BasicCredentials:
    """A username and password (for token auth, the token is the password); the password never shows in reprs."""

    username: str
    password: str = field(repr=False)

    @property
    def token(self) -> str:
        """``base64(username:password)``: what HTTP Basic sends and a docker config's ``auth`` field holds."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value for HTTP Basic."""
        return f"Basic {self.token}"
