"""The display's pure state: tiles, alarm ordering, acknowledgements, trends, coalescing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.alerts import AlertAck
from schemas.common import SourceInfo
from schemas.context import Admission, Discharge
from schemas.derived import FeatureSnapshot, FeatureValue, OrganState, RiskScore
from services.display.state import TREND_MINUTES, UnitState, make_alert
from streams.features.catalog import FEATURES

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def admission(patient_id: str, bed: str, at: datetime = T0) -> Admission:
    return Admission(
        patient_id=patient_id,
        observed_at=at,
        received_at=at,
        source=SourceInfo(adapter="simulator"),
        bed=bed,
        care_unit="ICU1",
    )


def snapshot(patient_id: str, at: datetime, **values: float | None) -> FeatureSnapshot:
    """A septic patient's snapshot: low MAP, raised lactate, renal impaired, brain unknown."""
    base: dict[str, float | None] = {
        "heart_rate_per_min": 118.0,
        "map_mmhg": 58.4,
        "spo2_pct": 93.0,
        "rso2_left_pct": 61.0,
        "rso2_right_pct": None,  # right sensor off: unknown, not 0
        "cvp_median_5min_mmhg": 14.0,
        "urine_output_6h_ml_kg_h": 0.31,
        "lactate_mmol_l": 4.2,
        "creatinine_mg_dl": 2.1,
    } | values
    return FeatureSnapshot(
        patient_id=patient_id,
        computed_at=at,
        features={
            name: FeatureValue(value=v, unit=FEATURES[name].unit, age_s=5.0)
            for name, v in base.items()
        },
        organs={
            "cardiovascular": OrganState(status="failing", subscore=3),
            "renal": OrganState(status="impaired", subscore=2, reason="UO < 0.5 mL/kg/h 6 h"),
            "respiratory": OrganState(status="normal", subscore=0),
        },
        sofa_total=None,
        sofa_known_organs=3,
        completeness={"vitals": 1.0, "nirs": 0.5, "crrt": 0.0, "labs": 0.5},
    )


def test_alarm_list_is_high_then_medium_then_low_and_newest_first_within_a_priority() -> None:
    unit = UnitState()
    unit.apply_alert(make_alert("old-med", "p1", "medium", T0))
    unit.apply_alert(make_alert("low", "p2", "low", T0 + timedelta(minutes=9)))
    unit.apply_alert(make_alert("new-med", "p3", "medium", T0 + timedelta(minutes=5)))
    unit.apply_alert(make_alert("high", "p4", "high", T0 - timedelta(hours=1)))
    assert [a["alert_id"] for a in unit.alarm_list()] == ["high", "new-med", "old-med", "low"]


def test_an_ended_alarm_leaves_the_list_but_stays_in_the_patient_history() -> None:
    unit = UnitState()
    unit.apply_alert(make_alert("a", "p1", "medium", T0))
    unit.apply_alert(
        make_alert("a", "p1", "medium", T0 + timedelta(minutes=7), phase="end", sequence=1)
    )
    assert unit.alarm_list() == []
    detail = unit.patient_detail("p1", 6)
    assert detail is not None
    assert [e["phase"] for e in detail["alerts"][0]["events"]] == ["start", "end"]
    assert detail["alerts"][0]["explanation"] == ["1-min median MAP 58 < 65 mmHg for 5 min"]


def test_duplicate_alert_events_are_dropped_by_event_id() -> None:
    unit = UnitState()
    assert unit.apply_alert(make_alert("a", "p1", "high", T0))
    assert not unit.apply_alert(make_alert("a", "p1", "high", T0))
    assert len(unit.alarms["a"].events) == 1


def test_an_acknowledgement_shows_at_once_and_the_workers_echo_confirms_it() -> None:
    unit = UnitState()
    unit.apply_alert(make_alert("a", "p1", "high", T0))
    unit.take_changes()
    ack = AlertAck(
        ack_id="k1", alert_id="a", patient_id="p1", action="acknowledge",
        user="dr.lee", role="clinician", at=T0 + timedelta(seconds=30),
    )  # fmt: skip
    assert unit.apply_ack(ack)
    assert not unit.apply_ack(ack)  # the same ack read back from the topic: once
    row = unit.alarm_list()[0]
    assert (row["acknowledged_by"], row["ack_confirmed"]) == ("dr.lee", False)
    assert unit.take_changes() == ({"p1"}, True)
    unit.apply_alert(
        make_alert("a", "p1", "high", T0, sequence=1, phase="update", acknowledged_by="dr.lee")
    )
    row = unit.alarm_list()[0]
    assert (row["acknowledged_by"], row["ack_confirmed"]) == ("dr.lee", True)
    assert [a.user for a in unit.audit] == ["dr.lee"]


def test_a_tile_shows_unknown_as_none_never_zero_and_the_highest_alarm() -> None:
    unit = UnitState()
    unit.apply_context(admission("p1", "ICU1-03"))
    unit.apply_features(snapshot("p1", T0))
    unit.apply_alert(make_alert("low", "p1", "low", T0))
    unit.apply_alert(make_alert("tech", "p1", "high", T0, kind="technical"))
    tile = unit.tile("p1")
    assert tile["bed"] == "ICU1-03"
    assert tile["numbers"]["map"] == 58
    assert tile["numbers"]["rso2_r"] is None
    assert tile["numbers"]["net_uf"] is None  # not on CRRT: no feature at all
    assert tile["risk"] is None  # no risk agent running
    assert tile["organs"]["renal"]["status"] == "impaired"
    assert tile["organs"]["brain"]["status"] == "unknown"
    assert tile["completeness_pct"] == 50
    assert (tile["alarm"]["alert_id"], tile["alarm"]["kind"], tile["alarm_count"]) == (
        "tech",
        "technical",
        2,
    )


def test_a_tile_before_any_snapshot_has_every_organ_unknown() -> None:
    unit = UnitState()
    unit.apply_context(admission("p9", "ICU1-09"))
    tile = unit.tile("p9")
    assert {o["status"] for o in tile["organs"].values()} == {"unknown"}
    assert set(tile["numbers"].values()) == {None}
    assert tile["completeness_pct"] is None


def test_beds_sort_naturally_and_discharged_patients_leave_the_overview() -> None:
    unit = UnitState()
    for pid, bed in (("a", "ICU1-10"), ("b", "ICU1-2"), ("c", "ICU1-1")):
        unit.apply_context(admission(pid, bed))
    assert unit.bed_order() == ["c", "b", "a"]
    unit.apply_context(
        Discharge(patient_id="b", observed_at=T0, received_at=T0, source=SourceInfo(adapter="adt"))
    )
    assert unit.bed_order() == ["c", "a"]


def test_trends_keep_one_point_per_minute_for_24_hours() -> None:
    unit = UnitState()
    for second in range(0, 25 * 3600, 20):
        unit.apply_features(
            snapshot("p1", T0 + timedelta(seconds=second), map_mmhg=60 + second % 7)
        )
    bed = unit.beds["p1"]
    assert len(bed.trend) == TREND_MINUTES
    detail = unit.patient_detail("p1", 6)
    assert detail is not None
    points = detail["series"]["map_mmhg"]["points"]
    assert len(points) == 6 * 60
    assert points[-1][0] - points[0][0] == (6 * 60 - 1) * 60
    assert detail["series"]["rso2_right_pct"]["points"][-1][1] is None


def test_an_older_snapshot_fills_the_trend_without_replacing_the_tile() -> None:
    unit = UnitState()
    unit.apply_features(snapshot("p1", T0 + timedelta(minutes=10), map_mmhg=70.0))
    unit.apply_features(snapshot("p1", T0, map_mmhg=55.0))
    assert unit.tile("p1")["numbers"]["map"] == 70
    assert [m for m in unit.beds["p1"].trend] == sorted(unit.beds["p1"].trend)
    assert len(unit.beds["p1"].trend) == 2


def test_risk_scores_show_on_the_tile_and_in_the_trend() -> None:
    unit = UnitState()
    unit.apply_risk(
        RiskScore(
            patient_id="p1", computed_at=T0, outcome="mods_progression_6h", horizon_h=6,
            probability=0.734, model_id="cold", model_version="1", cold_start=True,
        )
    )  # fmt: skip
    assert unit.tile("p1")["risk"] == 0.73
    detail = unit.patient_detail("p1", 6)
    assert detail is not None
    assert detail["series"]["risk"]["points"] == [[int(T0.timestamp()), 0.734]]


def test_changes_are_coalesced_until_taken() -> None:
    unit = UnitState()
    for second in range(0, 60, 10):
        unit.apply_features(snapshot("p1", T0 + timedelta(seconds=second)))
        unit.apply_features(snapshot("p2", T0 + timedelta(seconds=second)))
    assert unit.take_changes() == ({"p1", "p2"}, False)
    assert unit.take_changes() == (set(), False)
    unit.apply_alert(make_alert("a", "p2", "medium", T0))
    assert unit.take_changes() == ({"p2"}, True)


def test_read_back_decodes_one_snapshot_per_minute_yet_gives_the_same_trends_and_tiles() -> None:
    import threading

    from schemas.topics import TopicRegistry
    from services.display.feed import KafkaFeed

    records = [
        snapshot(pid, T0 + timedelta(seconds=s), map_mmhg=55 + s % 13, rso2_left_pct=None)
        for s in range(0, 3 * 3600, 10)
        for pid in ("p1", "p2")
    ]
    decoded = UnitState()
    for record in records:
        decoded.apply_features(record)
    read_back = UnitState()
    feed = KafkaFeed("unused:9092", TopicRegistry(), read_back, threading.Lock())
    for record in records:
        feed._apply("features", record.model_dump_json().encode())
    assert read_back.beds["p1"].snapshot is None  # nothing decoded in full yet
    feed._finish_read_back()
    for pid in ("p1", "p2"):
        assert read_back.tile(pid) == decoded.tile(pid)
        assert read_back.patient_detail(pid, 6) == decoded.patient_detail(pid, 6)
    assert len(read_back.beds["p1"].trend) == 3 * 60


def test_with_several_risk_outcomes_the_tile_shows_the_highest_and_an_old_score_is_ignored() -> (
    None
):
    unit = UnitState()

    def risk(outcome: str, probability: float, at: datetime) -> RiskScore:
        return RiskScore(
            patient_id="p1", computed_at=at, outcome=outcome, probability=probability,
            model_id="logreg", model_version="3", cold_start=False,
        )  # fmt: skip

    unit.apply_risk(risk("mods_progression_6h", 0.2, T0))
    unit.apply_risk(risk("sepsis", 0.6, T0))
    assert (unit.tile("p1")["risk"], unit.tile("p1")["risk_outcome"]) == (0.6, "sepsis")
    assert not unit.apply_risk(risk("sepsis", 0.9, T0 - timedelta(minutes=1)))
    unit.apply_risk(risk("sepsis", 0.1, T0 + timedelta(minutes=1)))
    assert unit.tile("p1")["risk_outcome"] == "mods_progression_6h"
    detail = unit.patient_detail("p1", 6)
    assert detail is not None
    assert detail["risk"]["other_outcomes"] == {"sepsis": 0.1}
    assert detail["series"]["risk"]["points"][-1][1] == 0.2
