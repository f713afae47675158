"""NIRS and CRRT key=value line protocols (services/ingest/nirs.py, crrt.py, linefmt.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.codes import QUANTITIES, CodeSystem, Quantity
from schemas.observations import CrrtStatus, NirsSample
from services.ingest import InputRefusedError
from services.ingest.crrt import NUMERIC_KEYS
from services.ingest.linefmt import MAX_LINE_BYTES, LineRefusedError, tokenize
from services.ingest.lines import parse_crrt_line, parse_nirs_line

RECEIVED = datetime(2026, 11, 22, 8, 0, 5, tzinfo=UTC)
T = datetime(2026, 11, 22, 8, 0, 1, tzinfo=UTC)
NIRS_HEAD = "NIRS v=1 patient=MRN123 device=INVOS-07 time=2026-11-22T08:00:01Z"
CRRT_HEAD = "CRRT v=1 patient=MRN123 device=PrismaFlex-0231 time=2026-11-22T08:00:01Z"


def nirs(rest: str) -> NirsSample:
    payload = parse_nirs_line(f"{NIRS_HEAD} {rest}".encode(), received_at=RECEIVED).outbound.payload
    assert isinstance(payload, NirsSample)
    return payload


def crrt(rest: str) -> CrrtStatus:
    payload = parse_crrt_line(f"{CRRT_HEAD} {rest}".encode(), received_at=RECEIVED).outbound.payload
    assert isinstance(payload, CrrtStatus)
    return payload


def refused(
    parse: object, line: str | bytes, reason: str, match: str | None = None
) -> InputRefusedError:
    data = line.encode() if isinstance(line, str) else line
    assert callable(parse)
    with pytest.raises(InputRefusedError, match=match) as info:
        parse(data, received_at=RECEIVED)
    assert info.value.reason == reason, str(info.value)
    return info.value


# --- NIRS ------------------------------------------------------------------------------


def test_nirs_full_line_maps_every_field() -> None:
    line = (
        b"NIRS v=1 patient=MRN123 device=INVOS-5100C-07 time=2026-11-22T09:00:01.000+01:00"
        b" left=64 right=66 baseline_left=70 baseline_right=71 bed=ICU1-07 care_unit=ICU1"
        b" id=123\r\n"
    )
    rec = parse_nirs_line(line, received_at=RECEIVED)
    assert (rec.sender_id, rec.patient_id) == ("123", "MRN123")
    assert (rec.outbound.topic, rec.outbound.key) == ("nirs", "MRN123")
    payload = rec.outbound.payload
    assert isinstance(payload, NirsSample)
    assert (payload.bed, payload.care_unit, payload.received_at) == ("ICU1-07", "ICU1", RECEIVED)
    assert payload.source.model_dump() == {
        "adapter": "nirs",
        "device_id": "INVOS-5100C-07",
        "message_control_id": "123",
    }
    got = [(m.quantity, m.value, m.unit, m.artefact) for m in payload.measurements]
    assert got == [
        (Quantity.RSO2_LEFT, 64.0, "%", False),
        (Quantity.RSO2_RIGHT, 66.0, "%", False),
        (Quantity.RSO2_BASELINE_LEFT, 70.0, "%", False),
        (Quantity.RSO2_BASELINE_RIGHT, 71.0, "%", False),
    ]
    for m in payload.measurements:
        assert m.observed_at == T
        assert m.observed_at.tzinfo is UTC
        assert m.device_id == "INVOS-5100C-07"
        assert m.code_system is CodeSystem.VIGIL
        assert m.quantity is not None
        assert m.code == QUANTITIES[m.quantity].private_code
    assert rec.dedup_key == ("MRN123", "INVOS-5100C-07", "123")


def test_nirs_dash_means_not_measured() -> None:
    payload = nirs("left=- right=58 baseline_left=-")
    assert [m.quantity for m in payload.measurements] == [Quantity.RSO2_RIGHT]


def test_nirs_line_without_any_measurement_is_refused() -> None:
    refused(
        parse_nirs_line, f"{NIRS_HEAD} left=- right=- id=9", "invalid_message", "no measurement"
    )
    refused(parse_nirs_line, f"{NIRS_HEAD} bed=ICU1-07", "invalid_message", "no measurement")


def test_nirs_fraction_converted_to_percent_via_normalise() -> None:
    (m,) = nirs("left=0.64{ratio}").measurements
    assert (m.value, m.unit) == (64.0, "%")
    (m,) = nirs("right=64%").measurements
    assert (m.quantity, m.value, m.unit) == (Quantity.RSO2_RIGHT, 64.0, "%")


def test_nirs_unconvertible_or_unknown_unit_is_refused_not_relabelled() -> None:
    refused(parse_nirs_line, f"{NIRS_HEAD} left=64mmHg", "invalid_message", "cannot be converted")
    refused(parse_nirs_line, f"{NIRS_HEAD} left=64pct", "invalid_message", "unknown unit 'pct'")
    long_unit = "x" * 40  # longer than a Measurement unit may be
    refused(parse_nirs_line, f"{NIRS_HEAD} left=64{long_unit}", "invalid_message", "unknown unit")


def test_nirs_implausible_value_kept_as_artefact() -> None:
    low, high = nirs("left=5 right=99").measurements
    assert (low.value, low.artefact, high.value, high.artefact) == (5.0, True, 99.0, True)
    (ok,) = nirs("left=15").measurements
    assert not ok.artefact


def test_nirs_poor_signal_flags_only_that_side_and_not_baselines() -> None:
    left, right, base = nirs("left=60 right=61 baseline_left=70 signal_right=poor").measurements
    assert (left.artefact, right.artefact, base.artefact) == (False, True, False)
    left, right, base = nirs("left=60 right=61 baseline_left=70 signal=POOR").measurements
    assert (left.artefact, right.artefact, base.artefact) == (True, True, False)
    left, right = nirs("left=60 right=61 signal=good").measurements
    assert (left.artefact, right.artefact) == (False, False)
    refused(parse_nirs_line, f"{NIRS_HEAD} left=60 signal=bad", "invalid_message", "good or poor")


def test_nirs_not_a_number_is_refused() -> None:
    for value in ("abc", "64,5", "nan", "inf", "1e3", "", "9" * 400):
        line = f"{NIRS_HEAD} left={value}" if value else f"{NIRS_HEAD} left="
        reason = "line_parse_error" if not value else "invalid_message"
        refused(parse_nirs_line, line, reason)


def test_unknown_key_is_refused_and_names_the_key() -> None:
    err = refused(parse_nirs_line, f"{NIRS_HEAD} lft=64 id=5", "unknown_field", "'lft'")
    assert isinstance(err, LineRefusedError)
    assert err.sender_id == "5"
    refused(parse_crrt_line, f"{CRRT_HEAD} bloodflow=180", "unknown_field", "mean 'blood_flow'")
    refused(parse_crrt_line, f"{CRRT_HEAD} qb=180", "unknown_field", "known: v, patient,")


def test_vendor_extension_keys_are_ignored() -> None:
    (m,) = nirs("left=64 x_ssi=4").measurements
    assert m.value == 64.0


def test_keys_and_record_type_are_case_insensitive() -> None:
    rec = parse_nirs_line(
        b"nirs V=1 Patient=MRN1 DEVICE=d TIME=2026-11-22T08:00:00Z LEFT=55", received_at=RECEIVED
    )
    assert rec.patient_id == "MRN1"


@pytest.mark.parametrize(
    ("line", "reason", "match"),
    [
        ("NIRS v=1 device=d time=2026-11-22T08:00:00Z left=5", "no_patient_identity", "patient"),
        ("NIRS v=1 patient=- device=d time=2026-11-22T08:00Z left=5", "no_patient_identity", None),
        (
            "NIRS v=1 patient=a/b device=d time=2026-11-22T08:00Z left=5",
            "invalid_message",
            "patient",
        ),
        ("NIRS v=1 patient=P time=2026-11-22T08:00:00Z left=5", "invalid_message", "device="),
        ("NIRS v=1 patient=P device=d left=5", "bad_timestamp", "time= is required"),
        ("NIRS patient=P device=d time=2026-11-22T08:00Z left=5", "invalid_message", "v=1"),
        ("NIRS v=2 patient=P device=d time=2026-11-22T08:00Z left=5", "invalid_message", "version"),
        ("CRRT v=1 patient=P device=d time=2026-11-22T08:00Z left=5", "line_parse_error", "NIRS"),
        ("", "line_parse_error", "empty line"),
        ("NIRS v=1 left", "line_parse_error", "'='"),
        ("NIRS v=1 =5", "line_parse_error", "key=value"),
        ('NIRS v=1 bed="ICU 1', "line_parse_error", "unterminated"),
        ('NIRS v=1 bed="a"b', "line_parse_error", "unexpected"),
        ('NIRS v=1 bed=a"b', "line_parse_error", "unexpected"),
        ("NIRS v=1 left=1 left=2", "line_parse_error", "twice"),
        ("NIRS v=1 patient=P id=a/b", "invalid_message", "id must be"),
        (
            "NIRS v=1 patient=P device=d time=2026-11-22T08:00Z left=5 bed=" + "b" * 33,
            "invalid_message",
            "bed",
        ),
    ],
)
def test_header_refusals(line: str, reason: str, match: str | None) -> None:
    refused(parse_nirs_line, line, reason, match)


def test_quoted_values_with_spaces_and_escapes() -> None:
    tokens = tokenize(b'CRRT alarm="Filter \\"clotted\\" \\\\ check" bed=x', "CRRT")
    assert tokens == {"alarm": 'Filter "clotted" \\ check', "bed": "x"}
    rec = parse_nirs_line(
        b'NIRS v=1 patient=P device="INVOS 5100C #7" time=2026-11-22T08:00Z left=64',
        received_at=RECEIVED,
    )
    assert isinstance(rec.outbound.payload, NirsSample)
    assert rec.outbound.payload.measurements[0].device_id == "INVOS 5100C #7"


def test_encoding_length_and_control_characters() -> None:
    refused(parse_nirs_line, b"NIRS v=1 bed=\xff\xfe", "line_parse_error", "not UTF-8")
    refused(parse_nirs_line, b"NIRS v=1\x00 left=1", "line_parse_error", "U\\+0000")
    refused(parse_nirs_line, b"NIRS v=1\rleft=1", "line_parse_error", "control")
    refused(parse_nirs_line, b"NIRS v=1\nleft=1", "line_parse_error", "control")
    refused(parse_nirs_line, "NIRS v=1 bed=a\u2028b", "line_parse_error", "U\\+2028")
    long_line = f"{NIRS_HEAD} left=64 x_pad=".encode()
    padded = long_line + b"a" * (MAX_LINE_BYTES - len(long_line))
    assert parse_nirs_line(padded + b"\r\n", received_at=RECEIVED).patient_id == "MRN123"
    refused(parse_nirs_line, padded + b"a", "line_parse_error", "limit 4096")


# --- CRRT ------------------------------------------------------------------------------

CRRT_FIELDS = {
    "blood_flow": ("180", Quantity.CRRT_BLOOD_FLOW, 180.0, "mL/min"),
    "dialysate_rate": ("1000", Quantity.CRRT_DIALYSATE_RATE, 1000.0, "mL/h"),
    "replacement_rate": ("1500", Quantity.CRRT_REPLACEMENT_RATE, 1500.0, "mL/h"),
    "effluent_rate": ("2650", Quantity.CRRT_EFFLUENT_RATE, 2650.0, "mL/h"),
    "net_uf_rate": ("150", Quantity.CRRT_NET_UF_RATE, 150.0, "mL/h"),
    "access_pressure": ("-72", Quantity.CRRT_ACCESS_PRESSURE, -72.0, "mm[Hg]"),
    "return_pressure": ("85", Quantity.CRRT_RETURN_PRESSURE, 85.0, "mm[Hg]"),
    "prefilter_pressure": ("168", Quantity.CRRT_PREFILTER_PRESSURE, 168.0, "mm[Hg]"),
    "effluent_pressure": ("-20", Quantity.CRRT_EFFLUENT_PRESSURE, -20.0, "mm[Hg]"),
    "tmp": ("142", Quantity.CRRT_TMP, 142.0, "mm[Hg]"),
    "filter_pressure_drop": ("83", Quantity.CRRT_FILTER_PRESSURE_DROP, 83.0, "mm[Hg]"),
    "fluid_removed": ("1240", Quantity.CRRT_FLUID_REMOVED, 1240.0, "mL"),
}


def test_crrt_field_table_covers_every_numeric_key() -> None:
    assert set(CRRT_FIELDS) == set(NUMERIC_KEYS)


@pytest.mark.parametrize("key", sorted(CRRT_FIELDS))
def test_crrt_each_field_maps_to_its_quantity_and_unit(key: str) -> None:
    text, quantity, value, unit = CRRT_FIELDS[key]
    (m,) = crrt(f"{key}={text}").measurements
    assert (m.quantity, m.value, m.unit, m.artefact) == (quantity, value, unit, False)
    assert unit == QUANTITIES[quantity].ucum_unit
    assert m.code == QUANTITIES[quantity].private_code
    assert (m.observed_at, m.device_id) == (T, "PrismaFlex-0231")


def test_crrt_full_line_keeps_field_order_mode_first_alarm_last() -> None:
    rest = " ".join(f"{k}={v[0]}" for k, v in CRRT_FIELDS.items())
    payload = crrt(f"mode=CVVHDF {rest} alarm=none id=c-1")
    quantities = [m.quantity for m in payload.measurements]
    assert quantities[0] is Quantity.CRRT_MODE
    assert quantities[-1] is Quantity.CRRT_MACHINE_ALARM
    assert len(quantities) == 14
    assert payload.source.model_dump() == {
        "adapter": "crrt",
        "device_id": "PrismaFlex-0231",
        "message_control_id": "c-1",
    }


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("CVVHDF", "CVVHDF"),
        ("cvvh", "CVVH"),
        ("Scuf", "SCUF"),
        ("TPE", "TPE"),
        ("STANDBY", "standby"),
        ("paused", "paused"),
    ],
)
def test_crrt_mode_is_normalised(text: str, stored: str) -> None:
    (m,) = crrt(f"mode={text}").measurements
    assert (m.quantity, m.value, m.value_text, m.unit) == (Quantity.CRRT_MODE, None, stored, "1")


def test_crrt_unknown_mode_is_refused() -> None:
    refused(parse_crrt_line, f"{CRRT_HEAD} mode=HDF", "invalid_message", "not one of")


def test_crrt_alarm_text_and_none() -> None:
    (m,) = crrt('alarm="Access pressure extremely negative"').measurements
    assert (m.quantity, m.value_text) == (
        Quantity.CRRT_MACHINE_ALARM,
        "Access pressure extremely negative",
    )
    (m,) = crrt("alarm=NONE").measurements
    assert m.value_text == "none"
    (m,) = crrt("alarm=A-231").measurements
    assert m.value_text == "A-231"
    refused(parse_crrt_line, f'{CRRT_HEAD} alarm="{"x" * 257}"', "invalid_message", "256")
    refused(parse_crrt_line, f'{CRRT_HEAD} alarm="  "', "invalid_message", "non-empty")


def test_crrt_units_converted_via_normalise() -> None:
    qb, eff, tmp, removed = crrt(  # measurements come in the protocol's field order
        "effluent_rate=2.65L/h tmp=20kPa fluid_removed=1.24L blood_flow=3mL/min"
    ).measurements
    assert (eff.value, eff.unit) == (2650.0, "mL/h")
    assert (tmp.value, tmp.unit) == (150.0124, "mm[Hg]")
    assert (removed.value, removed.unit) == (1240.0, "mL")
    assert (qb.value, qb.unit) == (3.0, "mL/min")
    (rate,) = crrt('net_uf_rate="2.5 mL/min"').measurements
    assert (rate.value, rate.unit) == (150.0, "mL/h")
    refused(parse_crrt_line, f"{CRRT_HEAD} blood_flow=10.8L/h", "invalid_message", "mL/min")


def test_crrt_implausible_values_kept_as_artefact() -> None:
    qb, tmp = crrt("blood_flow=1200 tmp=-150").measurements
    assert (qb.value, qb.artefact, tmp.value, tmp.artefact) == (1200.0, True, -150.0, True)
    (stopped,) = crrt("blood_flow=0").measurements
    assert (stopped.value, stopped.artefact) == (0.0, False)


def test_crrt_dash_and_empty_line() -> None:
    (m,) = crrt("mode=- blood_flow=- tmp=140 alarm=-").measurements
    assert m.quantity is Quantity.CRRT_TMP
    refused(parse_crrt_line, f"{CRRT_HEAD} mode=- alarm=-", "invalid_message", "no measurement")


def test_nirs_and_crrt_keys_do_not_cross() -> None:
    refused(parse_crrt_line, f"{CRRT_HEAD} left=64", "unknown_field")
    refused(parse_nirs_line, f"{NIRS_HEAD} tmp=140", "unknown_field")
