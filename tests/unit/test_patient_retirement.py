"""A discharged patient's state is reduced to a stub a month after the discharge (event
time): a readmission after it starts afresh, one before it keeps its history, and a
stray record after it raises nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from schemas.common import SourceInfo
from schemas.context import Admission, Discharge, Weight
from streams.alarm import AlertDraft
from streams.offline import OfflinePipeline
from streams.patient import RETIRE_AFTER_DISCHARGE_S, PatientState
from streams.rules import load_rules
from tests.support.patients import T0, map_trace, seconds, vitals

RULES = load_rules()
SRC = SourceInfo(adapter="test")
HYPOTENSION = map_trace([(600, 82), (900, 56), (900, 80)])
PATIENT = "p-again"


def stay(pipeline: OfflinePipeline, start: datetime, patient: str = PATIENT) -> list[AlertDraft]:
    """An admission with a weight, 40 min of monitoring with hypotension, a discharge."""
    drafts = pipeline.feed(
        "context", Admission(patient_id=patient, observed_at=start, received_at=start, source=SRC)
    )
    drafts += pipeline.feed(
        "context",
        Weight(patient_id=patient, observed_at=start, received_at=start, source=SRC, weight_kg=82),
    )
    for t, map_mmhg in enumerate(HYPOTENSION):
        drafts += pipeline.feed("vitals", vitals(patient, start + seconds(t + 1), map_mmhg))
    end = start + seconds(len(HYPOTENSION) + 1)
    drafts += pipeline.feed(
        "context", Discharge(patient_id=patient, observed_at=end, received_at=end, source=SRC)
    )
    return drafts


def timeline(drafts: list[AlertDraft], start: datetime) -> list[tuple[str, str, timedelta]]:
    """(rule, phase, time from the stay's start) of each alert."""
    events = [d.to_event(raised_at=start) for d in drafts]
    return [(e.rule_id, str(e.phase), e.triggered_at - start) for e in events]


def test_a_readmission_a_month_after_the_discharge_starts_afresh() -> None:
    pipeline = OfflinePipeline(RULES)
    first = stay(pipeline, T0)
    discharged_at = pipeline.patients[PATIENT].discharged_at
    assert discharged_at is not None
    full = len(json.dumps(pipeline.patients[PATIENT].to_state()))

    later = T0 + timedelta(seconds=RETIRE_AFTER_DISCHARGE_S + 3600)
    again = stay(pipeline, later)
    assert timeline(again, later) == timeline(first, T0)  # a new patient's alerts
    # the alerts of the second stay are new ones (ids from their own times)
    assert {d.to_event(raised_at=later).alert_id for d in again}.isdisjoint(
        d.to_event(raised_at=T0).alert_id for d in first
    )
    state = pipeline.patients[PATIENT]
    assert not state.retired  # readmitted, then discharged again: a full state again
    assert len(json.dumps(state.to_state())) > full / 2

    fresh = OfflinePipeline(RULES)
    assert timeline(stay(fresh, later, "p-new"), later) == timeline(again, later)


def test_a_stray_record_a_month_after_the_discharge_leaves_a_stub_and_raises_nothing() -> None:
    pipeline = OfflinePipeline(RULES)
    stay(pipeline, T0)
    state = pipeline.patients[PATIENT]
    full = json.dumps(state.to_state())
    discharged_at = state.discharged_at
    later = T0 + timedelta(seconds=RETIRE_AFTER_DISCHARGE_S + 3600)
    assert pipeline.feed("vitals", vitals(PATIENT, later, 40)) == []
    assert state.retired
    assert state.discharged_at == discharged_at
    stub = state.to_state()
    assert len(json.dumps(stub)) * 20 < len(full)
    assert "weight" not in stub
    assert "groups" not in stub
    assert PatientState.from_state(stub).to_state() == stub
    assert PatientState.from_state(stub).facts(later.timestamp()).weight_kg is None
    assert pipeline.feed("vitals", vitals(PATIENT, later + seconds(600), 40)) == []


def test_a_readmission_within_the_month_keeps_the_patients_history() -> None:
    pipeline = OfflinePipeline(RULES)
    stay(pipeline, T0)
    state = pipeline.patients[PATIENT]
    soon = T0 + timedelta(days=3)
    pipeline.feed(
        "context", Admission(patient_id=PATIENT, observed_at=soon, received_at=soon, source=SRC)
    )
    assert not state.retired
    assert state.facts(soon.timestamp()).weight_kg == 82  # charted in the first stay
