"""Child processes that cannot outlive the process that started them.

Every broker, worker or simulator that Vigil starts goes through
:func:`spawn`: the child gets its own process group (so a terminal Ctrl-C reaches
only the parent, which then stops children in order) and, on Linux, a parent-death
signal, so that even a parent killed with SIGKILL leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgid(0, 0)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group; stdout and stderr go to ``log_path``.

    With ``die_with_parent`` the child receives SIGTERM when this process exits,
    however it exits. A daemon meant to outlive the CLI that started it (``vigil
    kafka start``) passes ``die_with_parent=False``.
    """
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    try:
        return subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if die_with_parent else os.setpgrp,
        )
    finally:
        if not isinstance(out, int):
            out.close()


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, *, timeout_s: float = 30.0, group: bool = True) -> bool:
    """SIGTERM ``pid`` (its whole group when ``group``), SIGKILL after ``timeout_s``.

    Returns True when it exited within the grace period.
    """

    def _signal(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    if not pid_alive(pid):
        return True
    _signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    _signal(signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return False


def stop(proc: subprocess.Popen[bytes], *, timeout_s: float = 30.0) -> int | None:
    """Stop a child started by :func:`spawn` and reap it; returns its exit code."""
    if proc.poll() is None:
        stop_pid(proc.pid, timeout_s=timeout_s)
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
        return None
