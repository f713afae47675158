"""The project's own single-node Apache Kafka broker (KRaft), provisioned without Docker.

Kafka's jars come from Maven Central through the small Maven project in
``deploy/kafka/pom.xml`` and are cached per Kafka version under
``<cache dir>/<version>/libs`` (a stamp file marks a complete download, so later runs
are offline and never call Maven). The broker runs as
``java -cp '<libs>/*' kafka.Kafka <data dir>/server.properties`` with its storage,
``broker.pid`` and ``broker.log`` in the data directory.

This module knows nothing about :mod:`services.config`; ``services.cli_kafka`` builds a
:class:`LocalKafka` from the settings. It needs Java 17+ (and Maven for the first
download) only when a broker is actually provisioned.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from services.procs import pid_alive, spawn, stop_pid

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
KAFKA_VERSION = "3.9.1"
MIN_JAVA_VERSION = 17
DEFAULT_POM = PROJECT_ROOT / "deploy" / "kafka" / "pom.xml"
DEFAULT_LOG4J = PROJECT_ROOT / "deploy" / "kafka" / "log4j.properties"

_LOG_TAIL_LINES = 40
_ELSEWHERE = "or set KAFKA_BOOTSTRAP_SERVERS to use an existing cluster"


class KafkaProvisioningError(RuntimeError):
    """The local broker cannot be fetched, started or reached; the message says why."""


@dataclass(frozen=True, kw_only=True)
class LocalKafkaConfig:
    """Where and how the local broker runs. Ports listen on ``host`` only."""

    data_dir: Path
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "1g"
    kafka_version: str = KAFKA_VERSION
    pom_path: Path = field(default=DEFAULT_POM)
    log4j_path: Path = field(default=DEFAULT_LOG4J)

    def __post_init__(self) -> None:
        # Absolute paths: the broker runs with its data dir as working directory, and the
        # pid check compares the command line with these paths.
        for name in ("data_dir", "cache_dir", "pom_path", "log4j_path"):
            object.__setattr__(self, name, Path(getattr(self, name)).expanduser().resolve())
        for name in ("port", "controller_port"):
            value = getattr(self, name)
            if not 0 < value < 65536:
                raise ValueError(f"{name} must be in 1..65535, got {value}")
        if self.port == self.controller_port:
            raise ValueError(f"port and controller_port must differ (both {self.port})")
        if not re.fullmatch(r"[1-9][0-9]*[mMgG]", self.heap):
            raise ValueError(f"heap must look like 512m or 1g, got {self.heap!r}")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / self.kafka_version / "libs"

    @property
    def log_dirs(self) -> Path:
        """Kafka's storage (``log.dirs``), formatted once."""
        return self.data_dir / "logs"

    @property
    def server_properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"


@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    pid: int | None
    bootstrap: str
    answering: bool


def _prop_value(value: str) -> str:
    r"""Escape a value for a Java ``.properties`` file (read as ISO-8859-1).

    >>> _prop_value("/data/caf\u00e9\\x")
    '/data/caf\\u00e9\\\\x'
    """
    out = value.replace("\\", "\\\\")
    return "".join(ch if ord(ch) < 128 else f"\\u{ord(ch):04x}" for ch in out)


def render_server_properties(config: LocalKafkaConfig) -> str:
    """The single-node KRaft ``server.properties`` (broker and controller in one JVM).

    >>> cfg = LocalKafkaConfig(
    ...     data_dir=Path("/srv/vigil/kafka"), cache_dir=Path("/srv/cache"),
    ...     port=19092, controller_port=19093,
    ... )
    >>> print(render_server_properties(cfg))  # doctest: +ELLIPSIS
    # Written by Vigil (services/kafka_local.py) on every start; edits are overwritten.
    process.roles=broker,controller
    node.id=1
    controller.quorum.voters=1@127.0.0.1:19093
    listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093
    advertised.listeners=PLAINTEXT://127.0.0.1:19092
    ...
    log.dirs=/srv/vigil/kafka/logs
    ...
    """
    host, port, cport = config.host, config.port, config.controller_port
    lines = [
        "# Written by Vigil (services/kafka_local.py) on every start; edits are overwritten.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{cport}",
        f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
        f"advertised.listeners=PLAINTEXT://{host}:{port}",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={_prop_value(str(config.log_dirs))}",
        "num.partitions=1",
        # Topics come from `vigil topics create` only: an auto-created 1-partition topic
        # would break co-partitioning with the worker's tables.
        "auto.create.topics.enable=false",
        "default.replication.factor=1",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "group.initial.rebalance.delay.ms=0",
    ]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A random KRaft cluster id: a uuid4 as 22 base64url characters, as Kafka makes them.

    Like Kafka's ``Uuid.randomUuid`` it never starts with ``-`` (it would read as an option).

    >>> cid = new_cluster_id()
    >>> len(cid), cid.startswith("-")
    (22, False)
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports free on ``host`` right now (held open together while
    the OS picks them, so they cannot collide with each other).

    >>> a, b, c = free_ports(3)
    >>> len({a, b, c})
    3
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port``.

    SO_REUSEADDR, as the JVM uses it, so a port whose connections linger in TIME_WAIT
    after a broker stopped still counts as free.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _endpoints(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a bootstrap string; unparsable entries are left out."""
    out = []
    for item in bootstrap.split(","):
        host, sep, port = item.strip().rpartition(":")
        if sep and port.isdigit():
            out.append((host.strip("[]") or "127.0.0.1", int(port)))
    return out


def _tcp_answers(endpoints: list[tuple[str, int]], timeout_s: float) -> bool:
    for host, port in endpoints:
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=timeout_s).close()
            return True
    return False


def _describe_cluster(bootstrap: str, timeout_s: float) -> dict[str, Any]:
    """Cluster metadata through kafka-python's admin client, with every client closed.

    kafka-python 3 starts an IO thread in ``KafkaAdminClient.__init__`` and leaks it when
    bootstrapping fails there, so the network client is captured and closed in that case.
    """
    from kafka import KafkaAdminClient

    created: list[Any] = []
    default_client = KafkaAdminClient.DEFAULT_CONFIG.get("kafka_client")
    extra: dict[str, Any] = {}
    if default_client is not None:

        def _client(**configs: Any) -> Any:
            client = default_client(**configs)
            created.append(client)
            return client

        extra["kafka_client"] = _client
    timeout_ms = max(int(timeout_s * 1000), 200)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="vigil-readiness-probe",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            reconnect_backoff_max_ms=500,
            **extra,
        )
    except Exception:
        for client in created:
            with contextlib.suppress(Exception):
                client.close()
        raise
    try:
        info: dict[str, Any] = admin.describe_cluster()
        return info
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def _probe(bootstrap: str, timeout_s: float) -> str | None:
    """None when a broker answers a metadata request listing at least one broker, else why not."""
    endpoints = _endpoints(bootstrap)
    if endpoints and not _tcp_answers(endpoints, timeout_s=min(timeout_s, 1.0)):
        return "connection refused"
    try:
        info = _describe_cluster(bootstrap, timeout_s)
    except Exception as exc:  # kafka-python raises many types; all mean "not yet"
        return f"{type(exc).__name__}: {exc}"
    if not info.get("brokers"):
        return "metadata lists no brokers yet"
    return None


def _await_broker(
    bootstrap: str, timeout_s: float, alive: Callable[[], bool] | None = None
) -> str | None:
    """Poll until the broker answers (None), ``alive()`` turns False or time runs out (why)."""
    deadline = time.monotonic() + timeout_s
    reason = "no answer"
    while True:
        if alive is not None and not alive():
            return "process exited"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return reason
        why = _probe(bootstrap, timeout_s=max(0.5, min(5.0, remaining)))
        if why is None:
            return None
        reason = why
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def wait_for_broker(bootstrap: str, timeout_s: float) -> None:
    """Return once a (plaintext) cluster at ``bootstrap`` serves metadata; raise on timeout."""
    reason = _await_broker(bootstrap, timeout_s)
    if reason is not None:
        raise KafkaProvisioningError(
            f"No Kafka broker answered at {bootstrap} within {timeout_s:g} s (last error: {reason})"
        )


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return f"({path} is missing)"
    return "\n".join(data.splitlines()[-lines:]) or f"({path} is empty)"


def _heap_mib(heap: str) -> int:
    return int(heap[:-1]) * (1024 if heap[-1] in "gG" else 1)


@lru_cache(maxsize=8)
def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """The ``java`` executable ($JAVA_HOME first, then PATH), checked to be 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if java is None:
        raise KafkaProvisioningError(
            f"Java {MIN_JAVA_VERSION}+ is needed to run the local Kafka broker; install "
            f"openjdk-17-jre-headless {_ELSEWHERE}"
        )
    major = _java_major(java)
    if major is None or major < MIN_JAVA_VERSION:
        found = "an unknown version" if major is None else f"Java {major}"
        raise KafkaProvisioningError(
            f"Java {MIN_JAVA_VERSION}+ is needed to run the local Kafka broker, but {java} is "
            f"{found}; install openjdk-17-jre-headless (or point JAVA_HOME at a JDK 17+) "
            f"{_ELSEWHERE}"
        )
    return java


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed) for the ``with`` body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LocalKafka:
    """Fetch, start, check and stop the local broker described by a :class:`LocalKafkaConfig`.

    The broker outlives this object (and, by default, this process): its pid is kept in
    ``<data dir>/broker.pid``, so another process can find and stop it.
    """

    def __init__(self, config: LocalKafkaConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return self.config.bootstrap

    # -- jars ---------------------------------------------------------------------------

    def _stamp_file(self) -> Path:
        return self.config.cache_dir / self.config.kafka_version / "libs.stamp"

    def _expected_stamp(self) -> str | None:
        pom = self.config.pom_path
        if not pom.is_file():
            return None
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()
        return f"kafka {self.config.kafka_version}\npom sha256 {digest}\n"

    def _jars_cached(self) -> bool:
        stamp = self._stamp_file()
        if not (stamp.is_file() and self.config.libs_dir.is_dir()):
            return False
        expected = self._expected_stamp()
        # Without the pom (an installed copy of Vigil) a complete cache is trusted as is.
        return expected is None or stamp.read_text(encoding="utf-8") == expected

    def ensure_jars(self) -> Path:
        """The directory holding the broker's jars, downloaded with Maven on first use."""
        cfg = self.config
        if self._jars_cached():
            return cfg.libs_dir
        version_dir = cfg.cache_dir / cfg.kafka_version
        with _locked(version_dir / ".lock"):
            if self._jars_cached():  # another process fetched them while we waited
                return cfg.libs_dir
            expected = self._expected_stamp()
            if expected is None:
                raise KafkaProvisioningError(
                    f"Cannot fetch the Kafka {cfg.kafka_version} jars: {cfg.pom_path} is missing"
                )
            find_java()
            mvn = shutil.which("mvn")
            if mvn is None:
                raise KafkaProvisioningError(
                    f"Maven (mvn) is needed once to download the Kafka {cfg.kafka_version} jars "
                    f"into {cfg.libs_dir}; install maven {_ELSEWHERE}"
                )
            staging = version_dir / f"libs.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            argv = [
                mvn,
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(cfg.pom_path),
                "dependency:copy-dependencies",
                f"-Dlibs.dir={staging}",
                f"-Dkafka.version={cfg.kafka_version}",
            ]
            log.info("Fetching Kafka %s jars with Maven into %s", cfg.kafka_version, cfg.libs_dir)
            try:
                result = subprocess.run(
                    argv, capture_output=True, text=True, timeout=900, check=False
                )
            except subprocess.TimeoutExpired as exc:
                shutil.rmtree(staging, ignore_errors=True)
                raise KafkaProvisioningError(
                    f"Maven did not finish fetching the Kafka jars within {exc.timeout:g} s"
                ) from exc
            broker_jar = staging / f"kafka_2.13-{cfg.kafka_version}.jar"
            if result.returncode != 0 or not broker_jar.is_file():
                shutil.rmtree(staging, ignore_errors=True)
                output = "\n".join((result.stdout + result.stderr).splitlines()[-_LOG_TAIL_LINES:])
                raise KafkaProvisioningError(
                    f"Maven failed to fetch the Kafka {cfg.kafka_version} jars "
                    f"(exit {result.returncode}): {' '.join(argv)}\n{output}"
                )
            shutil.rmtree(cfg.libs_dir, ignore_errors=True)
            staging.rename(cfg.libs_dir)
            self._stamp_file().write_text(expected, encoding="utf-8")
        return cfg.libs_dir

    # -- process ------------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            return int(self.config.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def _cmdline_is_ours(self, cmdline: bytes) -> bool:
        args = cmdline.split(b"\0")
        return b"kafka.Kafka" in args and os.fsencode(self.config.server_properties) in args

    def _is_our_broker(self, pid: int) -> bool:
        if not pid_alive(pid):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # no procfs (macOS): trust the pid file
            return True
        return self._cmdline_is_ours(cmdline)

    def _find_running_broker(self) -> int | None:
        """This data dir's broker found through /proc, for a lost or stale pid file."""
        with contextlib.suppress(OSError):
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    if self._cmdline_is_ours((entry / "cmdline").read_bytes()):
                        pid = int(entry.name)
                        if pid_alive(pid):
                            return pid
        return None

    @property
    def pid(self) -> int | None:
        """The pid of this data dir's broker when it is running, else None."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None  # reaped
        pid = self._read_pid()
        if pid is not None and self._is_our_broker(pid):
            return pid
        found = self._find_running_broker()
        if found is not None:  # adopt it, so that stop() and status() keep working
            self.config.pid_file.write_text(f"{found}\n", encoding="ascii")
        return found

    def _clear_pid_file(self) -> None:
        self.config.pid_file.unlink(missing_ok=True)

    def _check_ports_free(self) -> None:
        cfg = self.config
        for name, port in (("client", cfg.port), ("controller", cfg.controller_port)):
            if _port_free(cfg.host, port):
                continue
            hint = (
                f"; if it is a Kafka cluster you want to use, set "
                f"KAFKA_BOOTSTRAP_SERVERS={cfg.host}:{port}"
                if name == "client"
                else ""
            )
            raise KafkaProvisioningError(
                f"Port {port} on {cfg.host} (Kafka {name} listener) is already in use by "
                f"another program, not by the Vigil broker of {cfg.data_dir}. Stop that "
                "program or choose other ports (VIGIL_KAFKA_PORT, VIGIL_KAFKA_CONTROLLER_PORT)"
                f"{hint}"
            )

    def _note(self, message: str) -> None:
        cfg = self.config
        cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(tz=UTC).isoformat(timespec="seconds")
        with cfg.log_file.open("a", encoding="utf-8") as fh:
            fh.write(f"=== vigil {stamp}: {message}\n")

    def _rotate_log(self, max_bytes: int = 20 * 1024 * 1024) -> None:
        """Keep one previous broker.log once the current one exceeds ``max_bytes``."""
        log_file = self.config.log_file
        with contextlib.suppress(OSError):
            if log_file.stat().st_size > max_bytes:
                log_file.replace(log_file.with_name(log_file.name + ".1"))

    def _java_argv(
        self, java: str, libs: Path, main: list[str], jvm_opts: tuple[str, ...] = ()
    ) -> list[str]:
        cfg = self.config
        if not cfg.log4j_path.is_file():
            raise KafkaProvisioningError(f"The broker's log4j config {cfg.log4j_path} is missing")
        return [
            java,
            *jvm_opts,
            f"-Dlog4j.configuration=file:{cfg.log4j_path}",
            "-cp",
            f"{libs}{os.sep}*",
            *main,
        ]

    def _format_storage(self, java: str, libs: Path) -> None:
        cfg = self.config
        cluster_id = new_cluster_id()
        argv = self._java_argv(
            java,
            libs,
            [
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
                "--config",
                str(cfg.server_properties),
                "--ignore-formatted",
            ],
        )
        self._note(f"formatting {cfg.log_dirs} (cluster id {cluster_id})")
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired as exc:
            raise KafkaProvisioningError("Formatting the Kafka storage timed out") from exc
        output = result.stdout + result.stderr
        with cfg.log_file.open("a", encoding="utf-8") as fh:
            fh.write(output)
        if result.returncode != 0:
            tail = "\n".join(output.splitlines()[-_LOG_TAIL_LINES:])
            raise KafkaProvisioningError(
                f"Formatting the Kafka storage in {cfg.log_dirs} failed "
                f"(exit {result.returncode}):\n{tail}"
            )

    def _failure(self, headline: str) -> KafkaProvisioningError:
        log_file = self.config.log_file
        return KafkaProvisioningError(f"{headline}. Last lines of {log_file}:\n{_tail(log_file)}")

    def start(self, timeout_s: float = 120.0, *, die_with_parent: bool = False) -> float:
        """Start the broker (formatting its storage once) and wait until it serves metadata.

        Returns the seconds this took, 0.0 when this data dir's broker was already up.
        ``die_with_parent`` ties the broker's life to the calling thread's process (tests);
        by default it keeps running after this process exits (``vigil kafka start``).
        """
        cfg = self.config
        started = time.monotonic()
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cfg.data_dir / "start.lock"):
            running = self.pid
            if running is not None:
                pid: int = running
                if _probe(cfg.bootstrap, timeout_s=3.0) is None:
                    return 0.0
                # Alive but not answering yet: most likely still starting up.
                reason = _await_broker(cfg.bootstrap, timeout_s, alive=lambda: pid_alive(pid))
                if reason is not None:
                    raise self._failure(
                        f"The Kafka broker (pid {pid}) of {cfg.data_dir} runs but did not "
                        f"answer on {cfg.bootstrap} within {timeout_s:g} s ({reason})"
                    )
                return time.monotonic() - started
            self._clear_pid_file()
            self._check_ports_free()
            java = find_java()
            libs = self.ensure_jars()
            cfg.server_properties.write_text(render_server_properties(cfg), encoding="utf-8")
            if not (cfg.log_dirs / "meta.properties").is_file():
                self._format_storage(java, libs)
            xms = "256m" if _heap_mib(cfg.heap) >= 256 else cfg.heap
            jvm_opts = (
                f"-Xms{xms}",
                f"-Xmx{cfg.heap}",
                # Kafka's own defaults (bin/kafka-run-class.sh).
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true",
            )
            argv = self._java_argv(
                java, libs, ["kafka.Kafka", str(cfg.server_properties)], jvm_opts
            )
            self._rotate_log()
            self._note(f"starting Kafka {cfg.kafka_version} on {cfg.bootstrap}")
            proc = spawn(
                argv, log_path=cfg.log_file, cwd=cfg.data_dir, die_with_parent=die_with_parent
            )
            self._proc = proc
            cfg.pid_file.write_text(f"{proc.pid}\n", encoding="ascii")
            reason = _await_broker(cfg.bootstrap, timeout_s, alive=lambda: proc.poll() is None)
            if reason is None:
                return time.monotonic() - started
            if proc.poll() is not None:
                self._proc = None
                self._clear_pid_file()
                raise self._failure(
                    f"The Kafka broker exited with code {proc.returncode} while starting"
                )
            stop_pid(proc.pid, timeout_s=10.0, group=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self._proc = None
            self._clear_pid_file()
            raise self._failure(
                f"The Kafka broker did not answer on {cfg.bootstrap} within {timeout_s:g} s "
                f"(last error: {reason}); it was stopped"
            )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the broker and wait for it (SIGKILL after ``timeout_s``).

        Returns True when a running broker was stopped, False when none was running.
        """
        pid = self.pid
        if pid is None:
            self._clear_pid_file()
            return False
        if not stop_pid(pid, timeout_s=timeout_s, group=True):
            log.warning("Kafka broker pid %d ignored SIGTERM for %g s; killed it", pid, timeout_s)
        if self._proc is not None and self._proc.pid == pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        self._proc = None
        self._clear_pid_file()
        return True

    def status(self) -> KafkaStatus:
        """Whether this data dir's broker runs and whether its address serves metadata."""
        pid = self.pid
        answering = _probe(self.bootstrap, timeout_s=3.0) is None
        return KafkaStatus(
            running=pid is not None, pid=pid, bootstrap=self.bootstrap, answering=answering
        )
