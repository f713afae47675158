"""The broker goes away mid-stream: the listener refuses (or stays silent), never acks-and-loses.

A broker of its own (stopped and restarted on the same data), so the session broker
of the other tests is not disturbed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_fixture import unavailable

from schemas.observations import VitalSigns
from services.config import Settings
from services.kafka_local import KafkaProvisioningError, LocalKafka, LocalKafkaConfig, free_ports
from tests.support.sockets import MllpClient, ack_code
from tests.support.stack import Stack, unique_prefix

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "hl7"
PHILIPS = (SHARED / "philips-pic-ix-pocd-ig" / "pic_ix_example_numerics_ORU_R01.hl7").read_bytes()


def message(control_id: str) -> bytes:
    return PHILIPS.strip().replace(b"HP0425230332.872USDANRMMD1NBR488", control_id.encode())


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    port, controller_port = free_ports(2)
    kafka = LocalKafka(
        LocalKafkaConfig(
            data_dir=tmp_path / "kafka",
            cache_dir=Settings().kafka_cache_dir,
            port=port,
            controller_port=controller_port,
            heap="512m",
        )
    )
    try:
        kafka.start(timeout_s=90, die_with_parent=True)
    except KafkaProvisioningError as exc:
        unavailable(f"local broker: {exc}")
    try:
        yield kafka
    finally:
        kafka.stop()


def test_no_positive_ack_without_the_record_on_the_topic(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    stack = Stack(own_broker.config.bootstrap, tmp_path / "stack", unique_prefix("outage"))
    stack.create_topics()
    try:
        _proc, port = stack.start_listener("hl7", env={"VIGIL_INGEST_PUBLISH_TIMEOUT_S": "3"})
        acked: list[str] = []
        client = MllpClient(port, timeout_s=30)
        assert ack_code(client.send(message("OUT-1"))) == "CA"
        acked.append("OUT-1")

        own_broker.stop()
        replies: dict[str, str] = {}
        for n in (2, 3):
            try:
                replies[f"OUT-{n}"] = ack_code(client.send(message(f"OUT-{n}")))
            except (ConnectionError, TimeoutError):
                replies[f"OUT-{n}"] = "no reply"
        # Refused while the broker is down: a reject asking for a resend, or silence.
        assert set(replies.values()) <= {"CR", "no reply"}, replies

        own_broker.start(timeout_s=90, die_with_parent=True)
        deadline = time.monotonic() + 90
        pending = ["OUT-2", "OUT-3"]
        while pending and time.monotonic() < deadline:
            control_id = pending[0]
            try:
                code = ack_code(client.send(message(control_id)))
            except (ConnectionError, TimeoutError, OSError):
                client.close()
                client = MllpClient(port, timeout_s=30)
                continue
            if code == "CA":
                acked.append(pending.pop(0))
            else:
                time.sleep(1)
        client.close()
        assert pending == [], "the listener never recovered after the broker came back"

        published = Counter(
            VitalSigns.model_validate_json(v).source.message_control_id
            for v in stack.read_all("vitals")
        )
        # Every positive ack is on the topic, and once: the refused attempts, still in
        # flight when the broker came back, were not written again by the resends.
        assert {control_id: published[control_id] for control_id in acked} == dict.fromkeys(
            acked, 1
        ), published
    finally:
        stack.stop_all()
