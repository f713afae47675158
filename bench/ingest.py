"""Benchmark of the ingestion listeners: messages/s a listener sustains into Kafka.

Starts `vigil hl7 listen` and `vigil nirs listen` processes against a real broker (the
project's local Kafka on free ports unless KAFKA_BOOTSTRAP_SERVERS is set) and measures,
with every reply waited for (a positive ack means Kafka acknowledged the write):

* HL7/MLLP, original mode (one message in flight per connection, as PCD-01 senders
  do): messages/s and ack latency percentiles for 1, 4 and 16 concurrent connections;
* NIRS lines, pipelined (a sender writes lines without waiting; replies in order):
  lines/s on one connection;
* the pure parse cost of the same messages, for comparison.

Usage: .venv/bin/python bench/ingest.py [--messages 3000]
Writes bench/results/ingest.json and ingest.md. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import broker, machine, write_results  # noqa: E402
from services.ingest.hl7 import parse_hl7  # noqa: E402
from tests.support.sockets import LineClient, MllpClient, ack_code  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

MESSAGE = (
    "MSH|^~\\&|GW|ICU|VIGIL|HOSP|{now}||ORU^R01^ORU_R01|{cid}|P|2.6|||AL|NE\r"
    "PID|1||{mrn}^^^HOSP^MR\rPV1|1|I|ICU1^^{bed}\r"
    "OBR|1||{cid}^GW|182777000^monitoring of patient^SCT|||{now}\r"
    "OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|{hr}|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R\r"
    "OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R\r"
    "OBX|3|NM|150037^MDC_PRESS_BLD_ART_ABP_SYS^MDC|1.3.1.1|118|266016^MDC_DIM_MMHG^MDC|||||R\r"
    "OBX|4|NM|150038^MDC_PRESS_BLD_ART_ABP_DIA^MDC|1.3.1.2|62|266016^MDC_DIM_MMHG^MDC|||||R\r"
    "OBX|5|NM|150039^MDC_PRESS_BLD_ART_ABP_MEAN^MDC|1.3.1.3|81|266016^MDC_DIM_MMHG^MDC|||||R\r"
    "OBX|6|NM|151562^MDC_RESP_RATE^MDC|1.4.1.1|16|264928^MDC_DIM_RESP_PER_MIN^MDC|||||R\r"
    "OBX|7|NM|150344^MDC_TEMP^MDC|1.5.1.1|37.1|268192^MDC_DIM_DEGC^MDC|||||R"
)


def hl7_message(n: int) -> bytes:
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    return MESSAGE.format(
        now=now, cid=f"B{n:08d}", mrn=f"MRN{n % 200:04d}", bed=f"{n % 200:02d}", hr=60 + n % 40
    ).encode()


def bench_hl7(port: int, connections: int, messages: int) -> dict[str, float]:
    per_connection = messages // connections
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def sender(index: int) -> None:
        client = MllpClient(port)
        mine: list[float] = []
        try:
            for i in range(per_connection):
                payload = hl7_message(index * 1_000_000 + i)
                began = time.perf_counter()
                code = ack_code(client.send(payload))
                mine.append(time.perf_counter() - began)
                if code != "CA":
                    failures.append(code)
        finally:
            client.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(connections)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "connections": connections,
        "messages": len(latencies),
        "messages_per_s": len(latencies) / elapsed,
        "ack_latency_p50_ms": float(np.percentile(ms, 50)),
        "ack_latency_p95_ms": float(np.percentile(ms, 95)),
        "ack_latency_p99_ms": float(np.percentile(ms, 99)),
        "not_accepted": len(failures),
    }


def bench_nirs(port: int, lines: int) -> dict[str, float]:
    now = datetime.now(UTC) - timedelta(minutes=5)
    payload = [
        f"NIRS v=1 patient=MRN{n % 200:04d} device=INVOS-{n % 200:03d} "
        f"time={(now + timedelta(milliseconds=n)).isoformat()} left=64 right=66 id={n}".encode()
        for n in range(lines)
    ]
    client = LineClient(port)
    began = time.perf_counter()
    sender = threading.Thread(target=client.send_lines, args=(payload,))
    sender.start()
    replies = client.read_replies(lines)
    sender.join()
    elapsed = time.perf_counter() - began
    client.close()
    return {
        "lines": lines,
        "lines_per_s": lines / elapsed,
        "not_ok": sum(not r.startswith("OK") for r in replies),
    }


def bench_parse(messages: int) -> dict[str, float]:
    raw = [hl7_message(n) for n in range(messages)]
    received = datetime.now(UTC)
    began = time.perf_counter()
    for message in raw:
        parse_hl7(message, received_at=received, site_tz=UTC)
    return {"hl7_parse_messages_per_s": messages / (time.perf_counter() - began)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    results: dict[str, object] = {**machine(), "pure": bench_parse(args.messages)}
    print(json.dumps(results["pure"], indent=2), flush=True)
    with broker("ingest") as kafka:
        stack = Stack(kafka.bootstrap, kafka.workdir, f"bench-{uuid.uuid4().hex[:6]}.")
        stack.create_topics()
        try:
            env = {"VIGIL_LOG_LEVEL": "WARNING"}
            _hl7, hl7_port = stack.start_listener("hl7", env=env)
            _nirs, nirs_port = stack.start_listener("nirs", env=env)
            runs = []
            for connections in (1, 4, 16):
                figures = bench_hl7(hl7_port, connections, args.messages)
                print(json.dumps(figures), flush=True)
                runs.append(figures)
            results["hl7_mllp"] = runs
            results["nirs_lines"] = bench_nirs(nirs_port, args.messages * 3)
            print(json.dumps(results["nirs_lines"]), flush=True)
        finally:
            stack.stop_all()
    write_results(args.out, "ingest", results, to_markdown(results))


def to_markdown(results: dict[str, object]) -> str:
    lines = [f"# Ingestion benchmark ({results['when']}, {results['machine']})", ""]
    lines += [
        "| HL7 connections | messages/s | ack p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for run in results.get("hl7_mllp", []):  # type: ignore[attr-defined]
        lines.append(
            f"| {run['connections']} | {run['messages_per_s']:,.0f} | "
            f"{run['ack_latency_p50_ms']:.1f} | {run['ack_latency_p95_ms']:.1f} | "
            f"{run['ack_latency_p99_ms']:.1f} |"
        )
    nirs = results.get("nirs_lines")
    if isinstance(nirs, dict):
        lines += ["", f"NIRS lines pipelined on one connection: {nirs['lines_per_s']:,.0f} lines/s"]
    pure = results["pure"]
    if isinstance(pure, dict):
        lines += [f"Pure HL7 parse: {pure['hl7_parse_messages_per_s']:,.0f} messages/s"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
