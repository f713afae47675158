"""ORU^R40 (IHE PCD-04) built from alert events: mapping, escaping, and the structure of
the Draeger reference messages in ../shared/data/hl7/draeger-ihe-pcd-acm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas.alerts import AlertEvent
from services.acm.oru_r40 import (
    ACM_PROFILE,
    RULE_EVENT_CODES,
    ReporterIdentity,
    build_oru_r40,
    parse_ack,
)
from services.ingest.hl7_syntax import RawMessage, Segment, decode_message

DRAEGER = Path(__file__).resolve().parents[3] / "shared" / "data" / "hl7" / "draeger-ihe-pcd-acm"
REPORTER = ReporterIdentity(eui64="00A0B1C2D3E4F506", receiving_application="CENTRAL")
T0 = datetime(2026, 5, 1, 14, 0, 5, tzinfo=UTC)
NOW = datetime(2026, 5, 1, 14, 0, 6, tzinfo=UTC)

# Value sets of the PCD TF (ACM, PCD-04 alert OBX values)
EVENT_PHASES = {
    "start", "start_only", "continue", "end", "present", "update", "escalate",
    "inactivate", "deescalate", "reset",
}  # fmt: skip
ALARM_STATES = {"inactive", "active", "latched"}
INACTIVATION_STATES = {
    "enabled", "audio-paused", "audio-off", "alarm-paused", "alarm-off", "alert-acknowledged",
}  # fmt: skip
PRIORITIES = {"PH", "PM", "PL", "PN"}
ALERT_KINDS = {"SP", "ST", "SA"}


def alert(**changes: Any) -> AlertEvent:
    """MAP low on bed ICU1-04 of the north site, as the worker raises it."""
    fields: dict[str, Any] = {
        "event_id": "4f1e0c1a-8f0e-5d2b-9a51-7c3d2e1f0a11",
        "alert_id": "9b2f1d7e-3c4a-5b6c-8d7e-0f1a2b3c4d5e",
        "sequence": 0,
        "patient_id": "MRN-004411",
        "bed": "ICU1-04",
        "care_unit": "ICU1",
        "site": "NORTH",
        "phase": "start",
        "reason": "onset",
        "priority": "medium",
        "rule_id": "perfusion.map_low",
        "rule_version": 1,
        "title": "MAP below 65 mmHg",
        "values": {"map_median_1min_mmhg": 57.5, "lactate_mmol_l": 3.1},
        "thresholds": {"map_median_1min_mmhg": 65.0},
        "condition_since": T0 - timedelta(minutes=5),
        "triggered_at": T0,
        "raised_at": T0 + timedelta(milliseconds=240),
        "explanation": ("map_median_1min_mmhg 57.5 < 65 for 300 s",),
        "source": "CLINICAL.md Perfusion",
    }
    fields.update(changes)
    return AlertEvent(**fields)


def decoded(a: AlertEvent) -> RawMessage:
    return decode_message(build_oru_r40(a, REPORTER, now=NOW))


def obx(msg: RawMessage) -> list[Segment]:
    return [s for s in msg.segments if s.name == "OBX"]


def obx_value(msg: RawMessage, observation_id: str) -> str:
    """OBX-5 (wire form) of the OBX whose OBX-3.1 is ``observation_id``."""
    found = [s.raw(5) for s in obx(msg) if msg.comp(s.raw(3), 1) == observation_id]
    assert len(found) == 1, (observation_id, found)
    return found[0]


@pytest.fixture(scope="module")
def draeger_alarm() -> RawMessage:
    return decode_message((DRAEGER / "PCD04_alarm.txt").read_bytes())


@pytest.fixture(scope="module")
def draeger_watchdog() -> RawMessage:
    return decode_message((DRAEGER / "PCD04_watchdog.txt").read_bytes())


# --- structure against the Draeger reference ------------------------------------------------


def test_segments_and_header_fields_mirror_the_draeger_alarm(draeger_alarm: RawMessage) -> None:
    ours = decoded(alert())
    draeger_names = [s.name for s in draeger_alarm.segments]
    assert draeger_names == ["MSH", "PID", "PV1", "OBR"] + ["OBX"] * 9
    # the same nine OBX, then (like Draeger's watchdog OBX 10) the value that fired it
    assert [s.name for s in ours.segments] == [*draeger_names, "OBX"]
    ours_msh, their_msh = ours.segments[0], draeger_alarm.segments[0]
    for n in (9, 12, 15, 16, 21):  # message type, version, ack types, profile
        assert ours.text(ours_msh, n) == draeger_alarm.text(their_msh, n), f"MSH-{n}"
    assert ours_msh.raw(21) == ACM_PROFILE == their_msh.raw(21)
    # MSH-3 is <EUI-64>^EUI-64 as Draeger's
    assert ours.comps(ours_msh.raw(3))[1] == draeger_alarm.comps(their_msh.raw(3))[1] == "EUI-64"


def test_location_and_alert_identifiers_have_the_draeger_shape(draeger_alarm: RawMessage) -> None:
    ours = decoded(alert())
    pv1, their_pv1 = ours.segments[2], draeger_alarm.segments[2]
    assert pv1.raw(2) == their_pv1.raw(2) == "I"
    # unit^room^bed^facility (Draeger: CU1^^Bed001^TAM)
    assert len(ours.comps(pv1.raw(3))) == len(draeger_alarm.comps(their_pv1.raw(3))) == 4
    assert ours.comps(pv1.raw(3)) == ["ICU1", "", "ICU1-04", "NORTH"]
    obr, their_obr = ours.segments[3], draeger_alarm.segments[3]
    assert len(obr.fields) == len(their_obr.fields) == 30  # OBR-29 is the last field
    assert obr.raw(4) == their_obr.raw(4) == "196616^MDC_EVT_ALARM^MDC"
    # OBR-3 filler order number: <sequence>^<alert id>^<EUI-64>^EUI-64
    ours3, theirs3 = ours.comps(obr.raw(3)), draeger_alarm.comps(their_obr.raw(3))
    assert len(ours3) == len(theirs3) == 4
    assert ours3[3] == theirs3[3] == "EUI-64"
    assert ours3[:2] == ["0", alert().alert_id]
    # OBR-29 parent: ^<the start event's EI as subcomponents>
    parent, their_parent = ours.comps(obr.raw(29)), draeger_alarm.comps(their_obr.raw(29))
    assert parent[0] == their_parent[0] == ""
    assert ours.sub(parent[1], 1) == draeger_alarm.sub(their_parent[1], 1) == "0"
    assert parent[1].count("&") == their_parent[1].count("&") == 3
    # PID-3: the patient id with an identifier type code in component 5 (Draeger: AN)
    assert ours.comps(ours.segments[1].raw(3))[4] == "PI"
    assert draeger_alarm.comps(draeger_alarm.segments[1].raw(3))[4] == "AN"


def test_obx_observation_ids_value_types_and_status_follow_the_reference(
    draeger_alarm: RawMessage, draeger_watchdog: RawMessage
) -> None:
    ours = obx(decoded(alert()))[:9]
    theirs, watchdog = obx(draeger_alarm), obx(draeger_watchdog)[:9]
    for i, (o, t, w) in enumerate(zip(ours, theirs, watchdog, strict=True), start=1):
        assert o.raw(1) == t.raw(1) == str(i)
        if i != 3:  # OBX 3 is the event itself: Draeger's is a sensor disconnection
            assert o.raw(3) == t.raw(3), f"OBX {i} OBX-3"
        assert o.raw(2) == w.raw(2), f"OBX {i} value type as the reference writes it"
        assert o.raw(11) == t.raw(11), f"OBX {i} result status"
        assert len(o.raw(4).split(".")) == len(t.raw(4).split(".")) == 4  # containment
        assert o.raw(18).endswith("^URN")
        assert t.raw(18).endswith("^URN")
        assert len(o.fields) == len(t.fields) == 19
    # Draeger's alarm writes the source as a numeric handle; its watchdog (and we) as a code
    assert theirs[3].raw(2) == "NM"
    assert watchdog[3].raw(2) == ours[3].raw(2) == "ST"
    assert theirs[2].raw(3).endswith("^MDC")
    assert "_EVT_" in theirs[2].raw(3)
    assert ours[2].raw(3) == "196670^MDC_EVT_LO^MDC"


def test_alert_attribute_values_are_in_the_pcd_value_sets_as_draeger_uses_them(
    draeger_alarm: RawMessage, draeger_watchdog: RawMessage
) -> None:
    sets = {
        "68481": EVENT_PHASES,
        "68482": ALARM_STATES,
        "68483": INACTIVATION_STATES,
        "68484": PRIORITIES,
        "68485": ALERT_KINDS,
    }
    for reference in (draeger_alarm, draeger_watchdog):
        for code, allowed in sets.items():
            assert obx_value(reference, code) in allowed
    samples = [
        alert(),
        alert(phase="escalate", reason="band", priority="high", sequence=1),
        alert(phase="update", reason="reminder", sequence=2),
        alert(phase="update", reason="acknowledge", sequence=3, acknowledged_by="rn.jones"),
        alert(phase="update", reason="latched", sequence=4, latched=True),
        alert(phase="end", reason="resolved", sequence=5, priority="low", kind="technical"),
    ]
    for a in samples:
        msg = decoded(a)
        for code, allowed in sets.items():
            assert obx_value(msg, code) in allowed, (a.phase, a.reason, code)


# --- mapping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "phase", "state", "inactivation"),
    [
        ({}, "start", "active", "enabled"),
        ({"phase": "escalate", "reason": "duration"}, "escalate", "active", "enabled"),
        ({"phase": "update", "reason": "reminder"}, "continue", "active", "enabled"),
        (
            {"phase": "update", "reason": "acknowledge", "acknowledged_by": "rn.jones"},
            "update",
            "active",
            "alert-acknowledged",
        ),
        (
            {"phase": "update", "reason": "silence", "silenced_until": T0 + timedelta(hours=1)},
            "update",
            "active",
            "audio-paused",
        ),
        ({"phase": "update", "reason": "latched", "latched": True}, "update", "latched", "enabled"),
        ({"phase": "end", "reason": "resolved"}, "end", "inactive", "enabled"),
    ],
)
def test_phase_alarm_state_and_inactivation_state(
    changes: dict[str, Any], phase: str, state: str, inactivation: str
) -> None:
    msg = decoded(alert(sequence=1 if changes else 0, **changes))
    assert obx_value(msg, "68481") == phase
    assert obx_value(msg, "68482") == state
    assert obx_value(msg, "68483") == inactivation


def test_a_silence_that_has_run_out_is_not_reported_as_paused() -> None:
    lapsed = alert(phase="update", reason="unsilence", sequence=2, silenced_until=T0)
    assert obx_value(decoded(lapsed), "68483") == "enabled"


@pytest.mark.parametrize(("priority", "code"), [("high", "PH"), ("medium", "PM"), ("low", "PL")])
def test_priority(priority: str, code: str) -> None:
    assert obx_value(decoded(alert(priority=priority)), "68484") == code


def test_kind_physiological_is_sp_and_technical_is_st() -> None:
    assert obx_value(decoded(alert()), "68485") == "SP"
    technical = alert(rule_id="technical.vitals_no_data", kind="technical", values={})
    assert obx_value(decoded(technical), "68485") == "ST"


def test_every_event_of_an_alert_shares_its_id_and_points_at_its_start() -> None:
    start, end = decoded(alert()), decoded(alert(phase="end", reason="resolved", sequence=4))
    for msg, seq in ((start, "0"), (end, "4")):
        obr = msg.segments[3]
        assert msg.comps(obr.raw(3))[:2] == [seq, alert().alert_id]
        assert msg.sub(msg.comps(obr.raw(29))[1], 2) == alert().alert_id
        assert msg.sub(msg.comps(obr.raw(29))[1], 1) == "0"
    # MSH-10 is the event id: a resend keeps it, another event has another one
    assert start.text(start.segments[0], 10) == alert().event_id


def test_rule_with_an_mdc_event_code_names_its_source_and_value() -> None:
    msg = decoded(alert())
    assert obx_value(msg, "68480") == "150035^MDC_PRESS_BLD_ART_MEAN^MDC"
    value = obx(msg)[9]
    assert value.raw(2) == "NM"
    assert value.raw(3) == "150035^MDC_PRESS_BLD_ART_MEAN^MDC"
    assert (value.raw(5), value.raw(6), value.raw(8)) == ("57.5", "mm[Hg]^mm[Hg]^UCUM", "L")
    assert value.raw(14) == "20260501140005+0000"
    assert msg.segments[3].raw(7) == "20260501140005+0000"  # OBR-7: the trigger's time


def test_rule_without_an_mdc_code_gets_a_local_code_and_its_feature_as_source() -> None:
    assert "renal.aki_creatinine" not in RULE_EVENT_CODES
    msg = decoded(
        alert(
            rule_id="renal.aki_creatinine",
            title="AKI by creatinine: KDIGO stage 2",
            values={"creatinine_ratio_to_baseline": 2.3},
            thresholds={"creatinine_ratio_to_baseline": 2.0},
        )
    )
    event = obx(msg)[2]
    assert event.raw(3) == "renal.aki_creatinine^^99VIGIL"
    assert event.raw(5) == "AKI by creatinine: KDIGO stage 2"
    assert obx_value(msg, "68480") == "creatinine_ratio_to_baseline^^99VIGIL"
    assert obx(msg)[9].raw(5) == "2.3"
    assert obx(msg)[9].raw(8) == ""


def test_no_value_no_value_obx() -> None:
    msg = decoded(alert(values={"map_median_1min_mmhg": None}))
    assert len(obx(msg)) == 9


def test_delimiters_in_text_are_escaped_and_non_ascii_travels_as_utf8() -> None:
    raw = build_oru_r40(
        alert(title="MAP < 65 | low^high & ~ Überwachung", bed="B|1", site="Nord^Süd"),
        REPORTER,
        now=NOW,
    )
    msg = decode_message(raw)
    assert msg.codec == "utf-8"
    assert len(obx(msg)) == 10  # no segment or field broken apart
    event = obx(msg)[2]
    assert msg.text(event, 5) == "MAP < 65 | low^high & ~ Überwachung"
    pv1 = msg.segments[2]
    assert msg.unescape(msg.comps(pv1.raw(3))[2]) == "B|1"
    assert msg.unescape(msg.comps(pv1.raw(3))[3]) == "Nord^Süd"
    assert b"\x0b" not in raw
    assert b"\x1c" not in raw


def test_reporter_identity_refuses_a_bad_eui64() -> None:
    with pytest.raises(ValueError, match="EUI-64"):
        ReporterIdentity(eui64="not-an-eui")


# --- ACKs ---------------------------------------------------------------------------------


def test_parse_ack_reads_the_draeger_ack_and_ours() -> None:
    draeger = parse_ack((DRAEGER / "ACK_watchdog.txt").read_bytes())
    assert draeger.code == "CA"
    assert draeger.committed
    assert draeger.control_id == "2df8823a-f8fb-44e0-a4ba-1d826e0809f1"
    from services.ingest.hl7 import build_ack

    message = build_oru_r40(alert(), REPORTER, now=NOW)
    for code, committed in (("CA", True), ("AA", True), ("CE", False), ("AR", False)):
        reply = parse_ack(build_ack(code, header=None, raw=message, now=NOW, control_id="X1"))
        assert (reply.code, reply.committed) == (code, committed)
        assert reply.control_id == alert().event_id


@pytest.mark.parametrize(
    "payload",
    [b"", b"garbage", b"MSH|^~\\&|||||x||ACK|1|P|2.6", b"MSH|^~\\&|||||x||ACK|1|P|2.6\rMSA|XX|1"],
)
def test_parse_ack_refuses_what_is_not_an_ack(payload: bytes) -> None:
    with pytest.raises(ValueError, match=r"HL7|MSA"):
        parse_ack(payload)


# --- the keep-alive (watchdog) message ---------------------------------------------------


def test_keepalive_mirrors_the_draeger_watchdog_message(draeger_watchdog: RawMessage) -> None:
    from services.acm.oru_r40 import build_watchdog

    ours = decode_message(
        build_watchdog(
            REPORTER, now=NOW, control_id="keepalive-1", counter=830, confirm_timeout_s=5
        )
    )
    theirs = draeger_watchdog
    assert [s.name for s in ours.segments] == [s.name for s in theirs.segments]
    assert ours.segments[0].raw(9) == theirs.segments[0].raw(9) == "ORU^R40^ORU_R40"
    assert ours.segments[0].raw(21) == theirs.segments[0].raw(21)
    assert ours.segments[3].raw(4) == theirs.segments[3].raw(4)
    assert ours.comps(ours.segments[3].raw(3))[0] == theirs.comps(theirs.segments[3].raw(3))[0]
    for o, t in zip(obx(ours), obx(theirs), strict=True):
        assert (o.raw(1), o.raw(2), o.raw(3), o.raw(11)) == (
            t.raw(1),
            t.raw(2),
            t.raw(3),
            t.raw(11),
        )
        if o.raw(1) not in ("4",):  # Draeger's source is a placeholder (MDC_TODO)
            assert o.raw(5) == t.raw(5), f"OBX {o.raw(1)}"
        assert o.raw(6) == t.raw(6)
    assert ours.comps(obx(ours)[3].raw(5))[0] == theirs.comps(obx(theirs)[3].raw(5))[0] == "69837"
    assert ours.text(ours.segments[1], 3) == ""  # about no patient
