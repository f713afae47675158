"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import click
from pydantic import ValidationError

from services.config import Settings


def load_settings() -> Settings:
    """Settings from the environment, or a clear CLI error naming the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"VIGIL_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise click.UsageError(f"invalid configuration in the environment: {problems}") from exc
