"""Users, roles, password hashes and the display's configuration.

Users come from a TOML file (never from the code), each with a scrypt hash:

```toml
[[user]]
name = "a.nurse"
role = "clinician"          # viewer | clinician | admin
password_hash = "scrypt$16384$8$1$<salt b64>$<hash b64>"
```

``vigil display hash-password`` prints a hash to paste there. Outside development
mode the display refuses to start without ``VIGIL_DISPLAY_SECRET`` (32+ characters)
and ``VIGIL_DISPLAY_USERS``; in development (``VIGIL_ENV=development``, as
``make run`` sets it) it generates a secret and demo users and prints their passwords.

>>> encoded = hash_password("correct horse", n=2**10)
>>> verify_password("correct horse", encoded), verify_password("wrong", encoded)
(True, False)
>>> can_acknowledge("viewer"), can_acknowledge("clinician"), can_acknowledge("admin")
(False, True, True)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["viewer", "clinician", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "clinician", "admin")
MIN_SECRET_CHARS = 32


def can_acknowledge(role: str) -> bool:
    """Clinicians and admins acknowledge alarms; viewers only watch."""
    return role in ("clinician", "admin")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = 2**14, r: int = 8, p: int = 1) -> str:
    """A salted scrypt hash, ``scrypt$n$r$p$salt$hash`` (base64 salt and hash)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches; constant-time; False for a malformed hash."""
    try:
        scheme, n, r, p, salt, expected = encoded.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(base64.b64decode(expected)),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(expected))


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str


class UsersFileError(ValueError):
    """The users file is missing, unreadable or has a bad entry."""


def load_users(path: Path) -> dict[str, User]:
    """Users by name from a TOML file of ``[[user]]`` tables."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsersFileError(f"cannot read users file {path}: {exc}") from exc
    users: dict[str, User] = {}
    for index, entry in enumerate(data.get("user", [])):
        name, role, hashed = entry.get("name"), entry.get("role"), entry.get("password_hash")
        where = f"{path}: user #{index + 1}"
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise UsersFileError(f"{where}: name must be 1-64 characters")
        if role not in ROLES:
            raise UsersFileError(f"{where} ({name}): role must be one of {', '.join(ROLES)}")
        if not isinstance(hashed, str) or not hashed.startswith("scrypt$"):
            raise UsersFileError(
                f"{where} ({name}): password_hash must be a scrypt hash "
                "(make one with `vigil display hash-password`)"
            )
        if name in users:
            raise UsersFileError(f"{where}: duplicate user {name!r}")
        users[name] = User(name, role, hashed)
    if not users:
        raise UsersFileError(f"{path}: no [[user]] entries")
    return users


class DisplaySettings(BaseSettings):
    """The display's own configuration, from ``VIGIL_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_", frozen=True, extra="ignore")

    env: Literal["development", "production"] = Field(
        default="production", description="development allows a generated secret and demo users"
    )
    display_host: str = "127.0.0.1"
    display_port: int = Field(default=8080, ge=0, le=65535)
    display_secret: SecretStr | None = Field(
        default=None, description="Signs session cookies; 32+ characters"
    )
    display_users: Path | None = Field(default=None, description="TOML users file")
    display_secure_cookies: bool = Field(
        default=False, description="Send the session cookie over HTTPS only (behind TLS)"
    )
    display_session_hours: float = Field(default=12.0, gt=0, le=24 * 7)
    display_tick_s: float = Field(
        default=0.5, gt=0, le=5, description="Live updates are coalesced per tick"
    )
    display_readback_hours: float = Field(default=24.0, ge=0, le=24 * 7)


class DisplayConfigError(RuntimeError):
    """The display cannot start with this configuration."""


@dataclass(frozen=True)
class Access:
    """What the running display authenticates with."""

    secret: str
    users: dict[str, User]
    development: bool
    demo_passwords: dict[str, str]  # development only: printed on the console


def resolve_access(config: DisplaySettings) -> Access:
    """Secret and users, or a clear refusal outside development mode."""
    development = config.env == "development"
    secret = config.display_secret.get_secret_value() if config.display_secret else None
    if secret is not None and len(secret) < MIN_SECRET_CHARS:
        raise DisplayConfigError(f"VIGIL_DISPLAY_SECRET must have {MIN_SECRET_CHARS}+ characters")
    if not development:
        if secret is None:
            raise DisplayConfigError(
                "VIGIL_DISPLAY_SECRET is not set (no default secret outside development;"
                " VIGIL_ENV=development generates one for a demo)"
            )
        if config.display_users is None:
            raise DisplayConfigError(
                "VIGIL_DISPLAY_USERS is not set: a TOML file of [[user]] name, role,"
                " password_hash (see docs/display.md)"
            )
    users = load_users(config.display_users) if config.display_users else {}
    demo: dict[str, str] = {}
    if development and not users:
        for role in ROLES:
            demo[role] = secrets.token_urlsafe(9)
            users[role] = User(role, role, hash_password(demo[role], n=2**12))
    return Access(secret or secrets.token_urlsafe(48), users, development, demo)
