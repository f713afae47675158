"""One frozen settings object per process, read from the environment (``VIGIL_*``).

``KAFKA_BOOTSTRAP_SERVERS`` (no prefix) points every command at an existing cluster;
without it, commands use the project's local broker on ``VIGIL_KAFKA_PORT``.
"""

from __future__ import annotations

from datetime import tzinfo
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import TopicRegistry

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()
DEFAULT_HOME = PROJECT_ROOT if _IN_CHECKOUT else Path.cwd()
"""Where run-time files go by default: the checkout (editable install) or the cwd."""


class Settings(BaseSettings):
    """Runtime configuration shared by every Vigil process."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_", frozen=True, extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "VIGIL_KAFKA_BOOTSTRAP_SERVERS"),
        description="An existing cluster; when unset the local broker is used.",
    )
    kafka_host: str = "127.0.0.1"
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    kafka_data_dir: Path = DEFAULT_HOME / ".run" / "kafka"
    kafka_cache_dir: Path = DEFAULT_HOME / ".cache" / "kafka"
    kafka_start_timeout_s: float = Field(default=120.0, gt=0)

    topic_prefix: str = Field(default="icu.", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: int = Field(default=4, ge=1, description="Partitions of every raw topic")
    replication_factor: int = Field(default=1, ge=1)

    app_id: str = Field(default="vigil-worker", description="Faust app id = consumer group")
    merge_queue_max: int = Field(
        default=5000,
        ge=2,
        description="Records one source may queue per partition in the worker's event-time"
        " merge before its reading pauses (a backlog read unevenly stays bounded)",
    )
    store: str = Field(
        default="rocksdb://", description="Faust table store: rocksdb:// or memory://"
    )
    data_dir: Path = DEFAULT_HOME / ".run"
    metrics_port: int = Field(default=9108, ge=0, le=65535, description="0 disables /metrics")
    metrics_host: str = Field(default="127.0.0.1", description="0.0.0.0 in containers")
    log_level: str = "INFO"

    site_timezone: str = Field(
        default="UTC",
        description="IANA zone of device clocks that send times without a UTC offset",
    )
    ingest_host: str = Field(default="127.0.0.1", description="0.0.0.0 to accept other hosts")
    hl7_port: int = Field(default=2575, ge=0, le=65535, description="MLLP listener (HL7 v2)")
    nirs_port: int = Field(default=2580, ge=0, le=65535)
    crrt_port: int = Field(default=2581, ge=0, le=65535)
    context_port: int = Field(default=2582, ge=0, le=65535)
    ingest_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    ingest_idle_timeout_s: float = Field(default=300.0, gt=0)
    ingest_max_connections: int = Field(default=256, ge=1)
    ingest_metrics_port: int = Field(
        default=9109, ge=0, le=65535, description="Listeners' /metrics (0 disables)"
    )
    ingest_publish_timeout_s: float = Field(
        default=15.0, gt=0, description="Longest wait for Kafka's ack before a negative ack"
    )

    @field_validator("site_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def site_tz(self) -> tzinfo:
        """The site's zone for timestamps without an offset."""
        return ZoneInfo(self.site_timezone)

    @property
    def bootstrap_servers(self) -> str:
        """The cluster every client talks to."""
        return self.kafka_bootstrap_servers or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def uses_local_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @cached_property
    def topics(self) -> TopicRegistry:
        return TopicRegistry(
            prefix=self.topic_prefix,
            partitions=self.partitions,
            replication_factor=self.replication_factor,
        )
