"""Shared fixtures. The Kafka broker logic lives in tests/kafka_fixture.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import kafka_fixture
import pytest

from services import procs
from tests.support.stack import STARTED_PIDS

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ needs a broker: mark it ``kafka``."""
    for item in items:
        if INTEGRATION_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.kafka)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show which broker the session used and how long it took to start."""
    for line in kafka_fixture.SUMMARY:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a real Kafka broker for the whole session (see kafka_fixture.py)."""
    with kafka_fixture.session_broker(tmp_path_factory) as broker:
        yield broker.bootstrap


def processes_under(directory: Path) -> list[str]:
    """Live processes whose command line mentions ``directory`` (our brokers, workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in cmdline:
            found.append(f"{proc.name}: {cmdline[:160]}")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test run must leave no broker or worker behind: fail the run if it did."""
    alive = [pid for pid in STARTED_PIDS if procs.pid_alive(pid)]
    factory = getattr(session.config, "_tmp_path_factory", None)
    leftovers = processes_under(factory.getbasetemp()) if factory is not None else []
    if alive or leftovers:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"LEFTOVER PROCESSES after the test run: pids {alive} {leftovers}", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
