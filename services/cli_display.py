"""``vigil display``: the ICU central-station web display (see docs/display.md)."""

from __future__ import annotations

import click

from services.cli_common import load_settings


@click.group("display", invoke_without_command=True)
@click.option("--host", default=None, help="Address to listen on (env VIGIL_DISPLAY_HOST)")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (env VIGIL_DISPLAY_PORT)"
)
@click.pass_context
def display_group(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the central-station display: unit overview, alarms, acknowledge, patient trends.

    Outside development (VIGIL_ENV=development) it needs VIGIL_DISPLAY_SECRET and
    VIGIL_DISPLAY_USERS (a TOML file of users with scrypt password hashes).
    """
    if ctx.invoked_subcommand is not None:
        return
    from pydantic import ValidationError

    from services.display.auth import DisplayConfigError, DisplaySettings, UsersFileError
    from services.display.server import serve_display

    settings = load_settings()
    try:
        display = DisplaySettings()
    except ValidationError as exc:
        raise click.UsageError(f"invalid display configuration: {exc}") from exc
    try:
        serve_display(settings, display=display, host=host, port=port, echo=click.echo)
    except (DisplayConfigError, UsersFileError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        pass


@display_group.command("hash-password")
@click.password_option(help="The password to hash (prompted, never echoed)")
def hash_password_cmd(password: str) -> None:
    """Print a scrypt hash for a users file entry (password_hash = "...")."""
    from services.display.auth import hash_password

    click.echo(hash_password(password))


if __name__ == "__main__":
    display_group()
