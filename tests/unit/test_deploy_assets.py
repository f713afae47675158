"""Offline consistency of the Docker path: compose, Dockerfile, Prometheus and Grafana assets.

No Docker needed: the files are parsed and checked against the code they configure (the
``vigil`` CLI, ``services.config.Settings``, the metrics each process defines: the worker's
in ``streams.metrics``, the listeners', the acm sender's, the display's, the risk agent's).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import prometheus_client
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import AliasChoices

from services import risk_agent
from services.acm import sender as acm_metrics
from services.cli import main
from services.config import Settings
from services.display import server as display_server
from services.ingest import server as ingest_metrics
from services.kafka_local import KAFKA_VERSION
from streams import metrics as worker_metrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS_TARGETS = ROOT / "deploy" / "prometheus" / "targets"
GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "vigil.yml"
DASHBOARD_FILE = GRAFANA / "dashboards" / "vigil.json"

COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
# Services built from this repository run the Vigil image (ENTRYPOINT ["vigil"]).
VIGIL_SERVICES = sorted(name for name, svc in SERVICES.items() if "build" in svc)
SETTINGS_ENV_PREFIX = "VIGIL_"

# ---------------------------------------------------------------- compose helpers

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def interpolate(value: object, env: Mapping[str, str]) -> str:
    """Compose's variable substitution (``${X}``, ``${X:-d}``, ``${X-d}``, ``${X:?e}``, ``$$``)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset = not current if op and op.startswith(":") else current is None
        if op and op.endswith("-"):
            return arg if unset else str(current)
        if op and op.endswith("?"):
            if unset:
                raise LookupError(arg or f"{name} is required")
            return str(current)
        return current or ""

    return _VARIABLE.sub(substitute, str(value))


def environment(service: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The service's environment after interpolation (``env``: the caller's variables)."""
    raw = SERVICES[service].get("environment", {})
    assert isinstance(raw, dict), f"{service}: write environment as a mapping"
    return {key: interpolate(value, env or {}) for key, value in raw.items()}


def command_args(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    assert isinstance(command, list), f"{service}: write command as a list (exec form)"
    return [interpolate(arg, {}) for arg in command]


def depends_on(service: str) -> dict[str, str]:
    deps = SERVICES[service].get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def bind_mounts(service: str) -> dict[str, str]:
    """``{host path: container path}`` of the service's bind mounts (sources starting ``.``)."""
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("."):
            mounts[source] = target
    return mounts


def named_volumes(service: str) -> dict[str, str]:
    mounts = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if not source.startswith((".", "/", "$")):
            mounts[source] = target
    return mounts


def settings_env_names() -> set[str]:
    """Every environment variable ``Settings`` reads (prefix + field, or a field's alias)."""
    names = set()
    for field_name, field in Settings.model_fields.items():
        names.add(SETTINGS_ENV_PREFIX + field_name.upper())
        if isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice) for choice in field.validation_alias.choices)
        elif isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
    return names


def listener_ports(listeners: str) -> dict[str, tuple[str, int]]:
    """``PLAINTEXT://kafka:9092,...`` -> ``{"PLAINTEXT": ("kafka", 9092), ...}``."""
    found = {}
    for item in listeners.split(","):
        name, address = item.strip().split("://")
        host, port = address.rsplit(":", 1)
        found[name] = (host, int(port))
    return found


# ---------------------------------------------------------------- Prometheus/Grafana helpers

_PROMQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_PROMQL_MATCHERS = re.compile(r"\{([^}]*)\}")
_PROMQL_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", re.IGNORECASE
)
_PROMQL_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_PROMQL_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*\b(?!\s*\()")
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression refers to; functions are not names."""
    labels: set[str] = set()
    for matchers in _PROMQL_MATCHERS.findall(expr):
        labels.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    rest = _PROMQL_MATCHERS.sub(" ", _PROMQL_STRING.sub('""', expr))
    for grouping in _PROMQL_GROUPING.findall(rest):
        labels.update(label.strip() for label in grouping.split(",") if label.strip())
    rest = _PROMQL_GROUPING.sub(" ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)  # range selectors, incl. $__rate_interval
    rest = _PROMQL_NUMBER.sub(" ", rest)
    names = {
        name
        for name in _PROMQL_IDENTIFIER.findall(rest)
        if name.lower() not in _PROMQL_KEYWORDS and not name.startswith("$")
    }
    return names, labels


def sample_names(family: prometheus_client.Metric) -> set[str]:
    """The series names a metric family exposes (counter ``_total``, histogram ``_bucket`` ...)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }.get(family.type, ("",))
    return {family.name + suffix for suffix in suffixes}


PROCESS_METRICS: dict[str, ModuleType] = {
    "vigil-worker": worker_metrics,
    "vigil-listeners": ingest_metrics,
    "vigil-acm": acm_metrics,
    "vigil-display": display_server,
    "vigil-risk": risk_agent,
}
"""Prometheus job -> the module whose metrics that process exports."""


def metric_objects(module: ModuleType) -> list[Any]:
    """The metrics (and custom collectors) a module defines or imports at module level."""
    return [
        m
        for m in vars(module).values()
        if isinstance(m, MetricWrapperBase) or (hasattr(m, "describe") and hasattr(m, "collect"))
        if not isinstance(m, type)
    ]


def metric_names(module: ModuleType) -> dict[str, set[str]]:
    """``{series name: label names}`` of every metric of ``module``."""
    names: dict[str, set[str]] = {}
    for metric in metric_objects(module):
        for family in metric.describe():
            labels = set(getattr(metric, "_labelnames", ()))
            labels |= {"le"} if family.type == "histogram" else set()
            for name in sample_names(family):
                names[name] = labels
    return names


def worker_metric_objects() -> list[MetricWrapperBase]:
    return [m for m in vars(worker_metrics).values() if isinstance(m, MetricWrapperBase)]


def worker_metric_names() -> dict[str, set[str]]:
    """``{series name: label names}`` of every metric defined in ``streams.metrics``."""
    return metric_names(worker_metrics)


def every_metric_name() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for module in PROCESS_METRICS.values():
        names |= metric_names(module)
    return names


def jobs_of(expr: str) -> set[str]:
    """The Prometheus jobs a query selects (``job="x"`` or ``job=~"x|y"`` or ``vigil-.*``)."""
    jobs: set[str] = set()
    for op, value in re.findall(r'job\s*(=~|=)\s*"([^"]*)"', expr):
        if op == "=":
            jobs.add(value)
        else:
            jobs |= {job for job in PROCESS_METRICS if re.fullmatch(value, job)}
    return jobs


def standard_process_metric_names() -> set[str]:
    """``process_*`` series of the default registry, which the worker's /metrics serves."""
    return {
        name
        for family in prometheus_client.REGISTRY.collect()
        if family.name.startswith("process_")
        for name in sample_names(family)
    }


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


@pytest.fixture(scope="module")
def targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = [t for p in walk_panels(dashboard["panels"]) for t in p.get("targets", [])]
    assert found, "the dashboard has no queries"
    return found


# ---------------------------------------------------------------- the image and the CLI


def test_vigil_services_run_the_image_built_here() -> None:
    assert {"topics", "worker", "simulator"} <= set(VIGIL_SERVICES)
    for name in VIGIL_SERVICES:
        build = SERVICES[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context).resolve() == ROOT
        assert "entrypoint" not in SERVICES[name], f"{name}: the image's ENTRYPOINT is vigil"


def test_dockerfile_installs_the_package_and_runs_vigil_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["vigil"] == "services.cli:main"
    assert re.search(r"^ENTRYPOINT \[\"vigil\"\]$", text, re.MULTILINE)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert pyproject["project"]["requires-python"] == ">=3.11"
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    # Installed (not editable) the package lives in site-packages, where Settings'
    # project-relative default data dir is neither meant nor writable: the image sets it.
    env_data_dir = re.search(r"VIGIL_DATA_DIR=(\S+)", text)
    assert env_data_dir, "the image must set VIGIL_DATA_DIR"
    assert environment("worker")["VIGIL_DATA_DIR"] == env_data_dir.group(1)


def test_dockerignore_keeps_local_state_out_and_the_package_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        globs = [pattern.removeprefix("**/") for pattern in patterns]
        return any(fnmatch(prefix, glob) for prefix in prefixes for glob in globs)

    for path in (".venv", ".cache", ".run", ".git", ".env", "bench/results", "test-artifacts"):
        assert ignored(path), f"{path} must not be in the build context"
    for path in (
        "pyproject.toml",
        "README.md",
        "schemas/topics.py",
        "streams/rules/default.toml",
        "services/cli.py",
    ):
        assert not ignored(path), f"{path} is needed to build the package"


def _resolve_cli(args: list[str]) -> tuple[click.Command, list[str], list[str]]:
    command: click.Command = main
    path = ["vigil"]
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"`{' '.join(path)}` needs a subcommand"
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`{' '.join(path)}` has no subcommand {name!r}"
        command, path = sub, [*path, name]
    return command, path, rest


@pytest.mark.parametrize("service", VIGIL_SERVICES)
def test_every_vigil_command_in_compose_exists_and_parses(service: str) -> None:
    command, path, rest = _resolve_cli(command_args(service))
    # Parses options and arguments exactly as the container would (defaults of ${...}).
    with command.make_context(" ".join(path), rest) as ctx:
        assert ctx.command is command


def test_the_expected_commands_run() -> None:
    assert command_args("topics") == ["topics", "create"]
    assert command_args("worker") == ["worker"]
    assert command_args("simulator")[:1] == ["simulate"]


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("service", VIGIL_SERVICES)
def test_vigil_environment_is_exactly_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = settings_env_names()
    env = environment(service)
    unknown = sorted(set(env) - known)
    assert not unknown, f"{service}: not read by services.config.Settings: {unknown}"
    for key in [k for k in os.environ if k in known]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # validates every value
    assert not settings.uses_local_kafka, f"{service}: containers use an external broker"


def test_every_interpolated_vigil_variable_is_a_setting() -> None:
    referenced = set(re.findall(r"\$\{?(VIGIL_\w+)", COMPOSE_FILE.read_text()))
    assert referenced, "compose should let VIGIL_* settings be overridden"
    assert referenced <= settings_env_names()


def test_shared_settings_are_identical_in_every_vigil_service() -> None:
    shared = ("KAFKA_BOOTSTRAP_SERVERS", "VIGIL_TOPIC_PREFIX", "VIGIL_PARTITIONS")
    values = {name: tuple(environment(name).get(key) for key in shared) for name in VIGIL_SERVICES}
    assert len(set(values.values())) == 1, values
    assert environment("topics")["VIGIL_TOPIC_PREFIX"] == Settings.model_fields[
        "topic_prefix"
    ].get_default(call_default_factory=True)


def test_kafka_bootstrap_points_at_the_kafka_service() -> None:
    kafka_env = environment("kafka")
    listeners = listener_ports(kafka_env["KAFKA_LISTENERS"])
    advertised = listener_ports(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    internal = kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"]
    for name in VIGIL_SERVICES:
        host, port = environment(name)["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)
        assert host in SERVICES, f"{name}: {host} is not a compose service"
        assert SERVICES[host]["image"].startswith("apache/kafka:")
        assert listeners[internal][1] == int(port)
        assert advertised[internal] == (host, int(port))
        assert depends_on(name).get("kafka", "service_healthy") == "service_healthy"
    # The host reaches the broker on the EXTERNAL listener it is advertised with.
    assert advertised["EXTERNAL"] == ("localhost", listeners["EXTERNAL"][1])
    published = [interpolate(p, {}).rsplit(":", 2)[-2:] for p in SERVICES["kafka"]["ports"]]
    assert [str(listeners["EXTERNAL"][1])] * 2 in published
    # KRaft single node: this node votes on its own controller listener.
    controller = kafka_env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert kafka_env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == (
        f"{kafka_env['KAFKA_NODE_ID']}@kafka:{listeners[controller][1]}"
    )
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert set(listener_ports(kafka_env["KAFKA_LISTENERS"])) == set(
        item.split(":")[0] for item in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )


def test_kafka_image_is_the_local_broker_version() -> None:
    image, tag = SERVICES["kafka"]["image"].rsplit(":", 1)
    assert image == "apache/kafka"
    assert tag == KAFKA_VERSION


def test_kafka_keeps_its_log_on_the_named_volume() -> None:
    volumes = named_volumes("kafka")
    assert environment("kafka")["KAFKA_LOG_DIRS"] in volumes.values()
    healthcheck = SERVICES["kafka"]["healthcheck"]["test"]
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in healthcheck
    assert int(SERVICES["kafka"]["healthcheck"]["retries"]) > 0


def test_services_start_in_order() -> None:
    assert depends_on("topics")["kafka"] == "service_healthy"
    assert depends_on("worker")["topics"] == "service_completed_successfully"
    assert depends_on("simulator")["worker"] == "service_healthy"
    for name in ("kafka", "worker"):
        assert "healthcheck" in SERVICES[name], f"{name} needs a healthcheck for depends_on"


def test_named_volumes_are_declared_and_the_worker_keeps_its_state() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    for name in SERVICES:
        assert set(named_volumes(name)) <= declared, name
    assert environment("worker")["VIGIL_DATA_DIR"] in named_volumes("worker").values()
    assert environment("worker")["VIGIL_STORE"] == "rocksdb://"


# ---------------------------------------------------------------- metrics: worker -> Prometheus


def test_worker_metrics_port_is_what_prometheus_scrapes() -> None:
    worker_env = environment("worker")
    port = int(worker_env["VIGIL_METRICS_PORT"])
    assert port > 0
    assert worker_env["VIGIL_METRICS_HOST"] == "0.0.0.0"  # reachable from other containers
    health = " ".join(SERVICES["worker"]["healthcheck"]["test"])
    url = re.search(r"http://([\w.]+):(\d+)(/\w+)", health)
    assert url, health
    assert (int(url.group(2)), url.group(3)) == (port, "/readyz")  # services.observability

    prometheus = yaml.safe_load(PROMETHEUS_FILE.read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    job = jobs["vigil-worker"]
    assert job["scrape_interval"] == "5s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    assert targets == [f"worker:{port}"]


def test_prometheus_reads_the_mounted_config() -> None:
    target = bind_mounts("prometheus")["./deploy/prometheus/prometheus.yml"]
    flags = [str(arg) for arg in SERVICES["prometheus"].get("command", [])]
    config_file = next(
        (f.split("=", 1)[1] for f in flags if f.startswith("--config.file=")),
        "/etc/prometheus/prometheus.yml",  # the image's default
    )
    assert config_file == target


def test_grafana_admin_password_must_be_supplied() -> None:
    grafana_env = SERVICES["grafana"]["environment"]
    password = str(grafana_env["GF_SECURITY_ADMIN_PASSWORD"])
    assert re.fullmatch(r"\$\{GF_SECURITY_ADMIN_PASSWORD:?\?[^}]*\}", password), password
    with pytest.raises(LookupError):
        interpolate(password, {})
    assert interpolate(password, {"GF_SECURITY_ADMIN_PASSWORD": "s3cret"}) == "s3cret"
    assert not any(key.startswith("GF_SECURITY_ADMIN_PASSWORD_") for key in grafana_env)
    assert str(grafana_env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "false"


def test_no_secret_has_a_default() -> None:
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|SASL_JAAS", re.IGNORECASE)
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if secret.search(key):
                required = rf"\$\{{{re.escape(key)}:?\?[^}}]*\}}"
                assert re.fullmatch(required, str(value)), f"{name}: {key} has a value or default"


def test_grafana_provisioning_paths_exist_and_match() -> None:
    for name in SERVICES:
        for source in bind_mounts(name):
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    mounts = bind_mounts("grafana")
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_in_container = mounts["./deploy/grafana/dashboards"]

    providers = yaml.safe_load(DASHBOARD_PROVIDER_FILE.read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [dashboards_in_container]
    home = environment("grafana", {"GF_SECURITY_ADMIN_PASSWORD": "x"}).get(
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    )
    if home is not None:
        assert home == f"{dashboards_in_container}/{DASHBOARD_FILE.name}"

    (datasource,) = yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    published = {p.rsplit(":", 1)[-1] for p in SERVICES["prometheus"]["ports"]}
    assert datasource["url"] == "http://prometheus:9090"
    assert "9090" in published


def test_listeners_are_scraped_and_checked_for_readiness() -> None:
    env = environment("listeners")
    port = int(env["VIGIL_INGEST_METRICS_PORT"])
    assert port > 0
    assert env["VIGIL_METRICS_HOST"] == "0.0.0.0"
    assert env["VIGIL_INGEST_HOST"] == "0.0.0.0"
    health = " ".join(SERVICES["listeners"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/readyz" in health
    published = {interpolate(p, {}).rsplit(":", 1)[-1] for p in SERVICES["listeners"]["ports"]}
    settings = Settings()
    listening = {settings.hl7_port, settings.nirs_port, settings.crrt_port, settings.context_port}
    assert {str(p) for p in listening | {port}} <= published
    jobs = {
        job["job_name"]: job
        for job in yaml.safe_load(PROMETHEUS_FILE.read_text())["scrape_configs"]
    }
    targets = [t for static in jobs["vigil-listeners"]["static_configs"] for t in static["targets"]]
    assert targets == [f"listeners:{port}"]


def test_every_process_has_a_scrape_job() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(PROCESS_METRICS) <= set(jobs)
    mount = bind_mounts("prometheus")["./deploy/prometheus/targets"]
    for name, job in jobs.items():
        assert job.get("metrics_path", "/metrics") == "/metrics", name
        for sd in job.get("file_sd_configs", []):
            for path in sd["files"]:
                assert path.startswith(mount + "/"), path
                local = PROMETHEUS_TARGETS / path.removeprefix(mount + "/")
                assert isinstance(yaml.safe_load(local.read_text()), list), local


# ---------------------------------------------------------------- the Grafana dashboard


def test_dashboard_identity_and_datasource(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "vigil-overview"
    assert dashboard["schemaVersion"] == 39
    (datasource,) = yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    uid = datasource["uid"]
    for panel in walk_panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid
    ids = [panel["id"] for panel in walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))


def test_dashboard_metrics_exist_in_the_process_of_their_job(
    targets: list[dict[str, Any]],
) -> None:
    """A query names only metrics that the process it selects (by job) exports."""
    common = standard_process_metric_names() | {"up"}  # `up`: Prometheus' own
    used: set[str] = set()
    for target in targets:
        expr = target["expr"]
        names, _ = promql_names(expr)
        jobs = jobs_of(expr)
        assert names, f"no metric found in {expr!r}"
        assert jobs, f"no vigil job selected in {expr!r}"
        known = set(common)
        for job in jobs:
            known |= set(metric_names(PROCESS_METRICS[job]))
        assert names <= known, (
            f"not exported by {sorted(jobs)}: {sorted(names - known)} in {expr!r}"
        )
        used |= names
    # Every metric of every process is on the dashboard.
    for job, module in PROCESS_METRICS.items():
        for metric in metric_objects(module):
            for family in metric.describe():
                assert sample_names(family) & used, f"{job}: {family.name} is not on the dashboard"
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= used
    assert {"vigil_consumer_lag_records", "vigil_active_alarms"} <= used


def test_dashboard_shows_risk_model_quality(targets: list[dict[str, Any]]) -> None:
    used = {name for t in targets for name in promql_names(t["expr"])[0]}
    quality = {
        "vigil_risk_rolling_auroc",
        "vigil_risk_rolling_log_loss",
        "vigil_risk_calibration_error",
        "vigil_risk_drift_events_total",
    }
    assert quality <= used
    assert quality <= set(metric_names(risk_agent))


def test_dashboard_uses_only_aggregate_labels(
    dashboard: dict[str, Any], targets: list[dict[str, Any]]
) -> None:
    allowed = {"job", "instance", "le"}
    for labels in every_metric_name().values():
        allowed |= labels
    identifying = re.compile(r"patient|bed|mrn|name|encounter|visit", re.IGNORECASE)
    assert not [label for label in allowed if identifying.search(label)]
    for target in targets:
        _, labels = promql_names(target["expr"])
        labels |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert labels <= allowed, f"labels {sorted(labels - allowed)} in {target['expr']!r}"
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((\w+)\{[^}]*\},\s*(\w+)\)", query)
        assert match, query
        assert match.group(2) in allowed


def test_promql_names_ignores_functions_labels_and_numbers() -> None:
    names, labels = promql_names(
        'histogram_quantile(0.95, sum by (le) (rate(x_bucket{job="a", instance=~"$i"}'
        "[$__rate_interval]))) / clamp_min(y_total, 1e-9) or vector(0)"
    )
    assert names == {"x_bucket", "y_total"}
    assert labels == {"le", "job", "instance"}
