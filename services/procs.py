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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1
# Resolved once in the parent: a forked child must not dlopen or allocate before exec.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent_hook(parent_pid: int) -> Callable[[], None]:
    def hook() -> None:  # pragma: no cover - runs in the child between fork and exec
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group; stdout and stderr go to ``log_path``.

    With ``die_with_parent`` the child receives SIGTERM when the thread that spawned
    it exits (on Linux: PR_SET_PDEATHSIG), so spawn from the main or a long-lived
    thread. A daemon meant to outlive the CLI that started it (``vigil kafka start``)
    passes ``die_with_parent=False`` and gets a session of its own.
    """
    out: IO[bytes] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    detach: dict[str, Any] = (
        {"process_group": 0, "preexec_fn": _die_with_parent_hook(os.getpid())}
        if die_with_parent
        else {"start_new_session": True}
    )
    try:
        return subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            **detach,
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
    """Stop a child started by :func:`spawn` (SIGTERM to its group, SIGKILL after
    ``timeout_s``) and reap it; returns its exit code (negative: killed by a signal)."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)
