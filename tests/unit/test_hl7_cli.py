"""``vigil hl7 parse`` through click's CliRunner, on real and fixture files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from services.cli_hl7 import hl7_group, split_messages
from services.ingest.mllp import MllpError, encode_frame

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "hl7"
PHILIPS = SHARED / "philips-pic-ix-pocd-ig" / "pic_ix_example_numerics_ORU_R01.hl7"
TRUNCATED = SHARED / "philips-pic-ix-pocd-ig" / "pic_ix_example_full_with_truncated_waveform.txt"
FIXTURES = ROOT / "tests" / "data" / "hl7"


def run(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(hl7_group, ["parse", *args], input=stdin)


def records(result: Result) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_parse_the_real_philips_message() -> None:
    result = run(str(PHILIPS))
    assert result.exit_code == 0, result.stderr
    (line,) = records(result)
    assert (line["topic"], line["key"]) == ("vitals", "12345")
    payload = line["payload"]
    assert isinstance(payload, dict)
    assert payload["measurements"][0]["value"] == 60.0
    assert payload["measurements"][0]["observed_at"] == "2021-04-26T03:03:31.496000Z"
    assert "184327" in result.stderr  # the unknown code's warning


def test_truncated_file_exits_1_naming_message_and_reason() -> None:
    result = run(str(TRUNCATED))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "message 1: refused (invalid_message)" in result.stderr
    assert "'- 5' is not a number" in result.stderr


def test_draeger_alarm_is_refused_as_unsupported() -> None:
    result = run(str(SHARED / "draeger-ihe-pcd-acm" / "PCD04_alarm.txt"))
    assert result.exit_code == 1
    assert "refused (unsupported_message_type)" in result.stderr


def _all_fixtures() -> list[bytes]:
    return [p.read_bytes().strip() for p in sorted(FIXTURES.glob("*.hl7"))]


@pytest.mark.parametrize(
    "join",
    [
        lambda ms: b"".join(encode_frame(m) for m in ms),  # MLLP
        lambda ms: b"\n\n".join(ms),  # blank lines
        lambda ms: b"\r".join(ms),  # consecutive
        lambda ms: b"\r\n".join(  # CRLF throughout, consecutive
            m.replace(b"\r\n", b"\r").replace(b"\r", b"\r\n") for m in ms
        ),
    ],
)
def test_several_messages_in_any_layout(join: object, tmp_path: Path) -> None:
    messages = _all_fixtures()
    path = tmp_path / "many.hl7"
    path.write_bytes(join(messages))  # type: ignore[operator]
    result = run(str(path), "--site-tz", "Europe/Berlin")
    assert result.exit_code == 0, result.stderr
    topics = [r["topic"] for r in records(result)]
    assert len(messages) == 9
    assert topics.count("context") == 3
    assert topics.count("labs") == 1
    assert topics.count("vitals") == 5


def test_stdin_and_a_bad_message_in_the_middle() -> None:
    good = PHILIPS.read_bytes()
    stream = good + b"\n\nPID|||no header\n\n" + good
    result = run("-", stdin=stream)
    assert result.exit_code == 1
    assert len(records(result)) == 2  # what parsed is printed
    assert "message 2: refused (hl7_parse_error)" in result.stderr
    assert "1 of 3 messages refused" in result.stderr


def test_site_tz_changes_times_without_offset(tmp_path: Path) -> None:
    raw = (FIXTURES / "mindray_style_oru_r01.hl7").read_bytes()
    times = {}
    for zone in ("UTC", "Asia/Tokyo"):
        result = run("-", "--site-tz", zone, stdin=raw)
        assert result.exit_code == 0, result.stderr
        payload = records(result)[0]["payload"]
        assert isinstance(payload, dict)
        times[zone] = payload["measurements"][0]["observed_at"]
    assert times == {"UTC": "2026-03-01T09:45:00Z", "Asia/Tokyo": "2026-03-01T00:45:00Z"}


def test_unknown_zone_and_empty_input() -> None:
    assert run("-", "--site-tz", "Mars/Olympus", stdin=b"MSH|").exit_code == 2
    result = run("-", stdin=b"  \n")
    assert result.exit_code == 1
    assert "no HL7 message found" in result.stderr


def test_split_messages_skips_batch_envelopes_and_reports_framing_errors() -> None:
    assert split_messages(b"FHS|^~\\&\rBHS|^~\\&\rMSH|1\rPID|1\rBTS|1\rFTS|1") == [b"MSH|1\rPID|1"]
    framed = split_messages(encode_frame(b"MSH|1") + b"\x0bMSH|unterminated")
    assert framed[0] == b"MSH|1"
    assert isinstance(framed[1], MllpError)
    assert "ended inside a frame" in framed[1].message
    assert framed[1].preview == b"MSH|unterminated"
