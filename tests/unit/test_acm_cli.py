"""``vigil acm send`` refuses bad options before touching the network."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from services.cli_acm import acm_group


@pytest.mark.parametrize("destination", ["nohostport", "host:", "host:0", "host:70000", ":2575"])
def test_send_refuses_a_bad_destination(destination: str) -> None:
    result = CliRunner().invoke(acm_group, ["send", "--to", destination])
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


def test_send_refuses_a_bad_eui64() -> None:
    result = CliRunner().invoke(acm_group, ["send", "--to", "127.0.0.1:1", "--eui64", "xyz"])
    assert result.exit_code == 2
    assert "EUI-64" in result.output


def test_send_documents_its_delivery_guarantees() -> None:
    result = CliRunner().invoke(acm_group, ["send", "--help"])
    assert result.exit_code == 0
    for option in ("--to", "--group", "--watchdog", "--keepalive", "--site", "--priority"):
        assert option in result.output
