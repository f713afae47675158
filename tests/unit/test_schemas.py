"""The message contracts (schemas/): validation rules, the code table, JSON and JSON Schema."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from schemas.alerts import AlertAck, AlertEvent, AlertPhase, AlertPriority, AlertReason
from schemas.annotations import GroundTruth
from schemas.codes import QUANTITIES, Category, CodeSystem, Quantity, lookup
from schemas.common import SourceInfo
from schemas.context import ContextEvent
from schemas.deadletter import DeadLetter
from schemas.derived import (
    Contribution,
    FeatureSnapshot,
    FeatureValue,
    Organ,
    OrganState,
    RiskScore,
)
from schemas.export import export_json_schemas
from schemas.observations import CrrtStatus, LabResults, Measurement, NirsSample, VitalSigns
from schemas.topics import TOPICS, TopicRegistry

# A night shift in ICU1: bed 7 becomes septic and hypotensive.
T0 = datetime(2026, 3, 14, 2, 17, 5, tzinfo=UTC)
RECEIVED = T0 + timedelta(milliseconds=420)
PATIENT = "MRN-0042317"
MONITOR = "IntelliVue-MX800-ICU1-07"
HL7_SOURCE = SourceInfo(adapter="hl7", device_id=MONITOR, message_control_id="MSG00017731")

# An HL7 v2 MLLP frame with a byte that is not valid UTF-8 (0xFF) in it.
NON_UTF8_FRAME = b"\x0bMSH|^~\\&\xff\x1c\r"


def vitals_sample(**overrides: Any) -> VitalSigns:
    fields: dict[str, Any] = {
        "patient_id": PATIENT,
        "bed": "ICU1-07",
        "care_unit": "ICU1",
        "source": HL7_SOURCE,
        "received_at": RECEIVED,
        "measurements": (
            Measurement.of(Quantity.HEART_RATE, 118, T0, device_id=MONITOR),
            Measurement.of(Quantity.ABP_SYS, 88, T0, device_id=MONITOR),
            Measurement.of(Quantity.ABP_DIA, 48, T0, device_id=MONITOR),
            Measurement.of(Quantity.ABP_MEAN, 61, T0, device_id=MONITOR),
            Measurement.of(Quantity.SPO2, 93, T0, device_id=MONITOR),
            Measurement.of(Quantity.TEMPERATURE, 38.6, T0, device_id=MONITOR),
        ),
    }
    fields.update(overrides)
    return VitalSigns(**fields)


def _context(kind: str, **fields: Any) -> ContextEvent:
    return ContextEvent.model_validate(
        {
            "kind": kind,
            "patient_id": PATIENT,
            "observed_at": T0,
            "received_at": RECEIVED,
            "source": {"adapter": "context", "device_id": "epic-adt"},
            **fields,
        }
    )


CONTEXT_EXAMPLES: dict[str, ContextEvent] = {
    "admission": _context(
        "admission", bed="ICU1-07", care_unit="ICU1", site="St-Elsewhere", age_years=67, sex="male"
    ),
    "transfer": _context("transfer", bed="ICU2-03", care_unit="ICU2", site="St-Elsewhere"),
    "discharge": _context("discharge", disposition="ward"),
    "weight": _context("weight", weight_kg=82.4),
    "infusion": _context("infusion", drug="norepinephrine", rate=0.12, rate_unit="ug/kg/min"),
    "drug_dose": _context("drug_dose", drug="furosemide", dose_mg=82.0),
    "gcs": _context("gcs", total=13, eye=3, verbal=4, motor=6),
    "urine_output": _context("urine_output", volume_ml=22.0, period_start=T0 - timedelta(hours=1)),
    "fluid": _context("fluid", direction="in", volume_ml=500.0, route="IV Ringer's lactate"),
    "renal_venous_doppler": _context(
        "renal_venous_doppler", pattern="biphasic_discontinuous", ivc_diameter_cm=2.3
    ),
    "capillary_refill": _context("capillary_refill", seconds=4.5),
    "outcome_label": _context(
        "outcome_label", outcome="sepsis", label=True, label_source="physionet2019"
    ),
}


def example_messages() -> dict[str, BaseModel]:
    """One realistic message per topic, keyed by the topic's base name."""
    nirs_device = "INVOS-5100C-07"
    crrt_device = "PrismaFlex-0231"
    crrt_at = T0 - timedelta(seconds=20)
    lab_at = T0 - timedelta(minutes=35)
    return {
        "vitals": vitals_sample(),
        "nirs": NirsSample(
            patient_id=PATIENT,
            bed="ICU1-07",
            source=SourceInfo(adapter="nirs", device_id=nirs_device),
            received_at=RECEIVED,
            measurements=(
                Measurement.of(Quantity.RSO2_LEFT, 54, T0, device_id=nirs_device),
                Measurement.of(Quantity.RSO2_RIGHT, 49, T0, device_id=nirs_device),
                Measurement.of(Quantity.RSO2_BASELINE_LEFT, 68, T0, device_id=nirs_device),
            ),
        ),
        "crrt": CrrtStatus(
            patient_id=PATIENT,
            source=SourceInfo(adapter="crrt", device_id=crrt_device),
            received_at=RECEIVED,
            measurements=(
                Measurement.of(Quantity.CRRT_MODE, "CVVHDF", crrt_at, device_id=crrt_device),
                Measurement.of(Quantity.CRRT_BLOOD_FLOW, 180, crrt_at, device_id=crrt_device),
                Measurement.of(Quantity.CRRT_EFFLUENT_RATE, 2050, crrt_at, device_id=crrt_device),
                Measurement.of(Quantity.CRRT_TMP, 142, crrt_at, device_id=crrt_device),
                Measurement.of(Quantity.CRRT_PREFILTER_PRESSURE, 168, crrt_at),
            ),
        ),
        "labs": LabResults(
            patient_id=PATIENT,
            source=SourceInfo(adapter="hl7", device_id="LIS", message_control_id="LAB5531"),
            received_at=RECEIVED,
            order_id="F-88231",
            result_status="F",
            measurements=(
                Measurement.of(Quantity.LACTATE, 4.3, lab_at),
                Measurement.of(Quantity.CREATININE, 2.4, lab_at),
                Measurement.of(Quantity.PLATELETS, 92, lab_at),
            ),
        ),
        "context": CONTEXT_EXAMPLES["infusion"],
        "features": FeatureSnapshot(
            patient_id=PATIENT,
            computed_at=T0,
            features={
                "map_median_1min_mmhg": FeatureValue(value=61.0, unit="mm[Hg]", age_s=0.0),
                "lactate_mmol_l": FeatureValue(value=4.3, unit="mmol/L", age_s=2100.0),
                "urine_ml_kg_h_6h": FeatureValue(value=None, unit="mL/kg/h"),
            },
            organs={
                Organ.CARDIOVASCULAR: OrganState(status="failing", subscore=3, age_s=0.0),
                Organ.RENAL: OrganState(status="impaired", subscore=2, age_s=2100.0),
                Organ.LIVER: OrganState(status="unknown", reason="no bilirubin in 24 h"),
            },
            sofa_total=None,
            sofa_known_organs=2,
            completeness={"vitals": 1.0, "labs": 0.5, "context": 0.25},
        ),
        "risk": RiskScore(
            patient_id=PATIENT,
            computed_at=T0,
            outcome="mods_progression_6h",
            horizon_h=6,
            probability=0.71,
            per_organ={Organ.CARDIOVASCULAR: 0.8, Organ.RENAL: 0.55},
            model_id="river-logreg",
            model_version="2026.03.1",
            cold_start=False,
            top_contributions=(
                Contribution(feature="map_median_1min_mmhg", value=61.0, contribution=0.9),
                Contribution(feature="lactate_mmol_l", value=4.3, contribution=0.6),
            ),
        ),
        "alerts": AlertEvent(
            event_id="perfusion.map_low:MRN-0042317:1773454625:0",
            alert_id="perfusion.map_low:MRN-0042317:1773454625",
            sequence=0,
            patient_id=PATIENT,
            bed="ICU1-07",
            care_unit="ICU1",
            phase=AlertPhase.START,
            priority=AlertPriority.MEDIUM,
            rule_id="perfusion.map_low",
            rule_version=1,
            title="MAP below 65 mmHg",
            values={"map_median_1min_mmhg": 61.0},
            thresholds={"map_median_1min_mmhg": 65.0},
            condition_since=T0 - timedelta(minutes=5),
            triggered_at=T0,
            raised_at=RECEIVED + timedelta(milliseconds=35),
            trigger_received_at=RECEIVED,
            explanation=("1-min median MAP 61 < 65 mmHg for 300 s (on-delay 300 s)",),
            source="CLINICAL.md Perfusion: MAP < 65 mmHg (Sepsis-3)",
            reason=AlertReason.ONSET,
        ),
        "alerts.ack": AlertAck(
            ack_id="ack-7f3a",
            alert_id="perfusion.map_low:MRN-0042317:1773454625",
            patient_id=PATIENT,
            action="silence",
            user="rn.jdoe",
            role="clinician",
            at=T0 + timedelta(minutes=1),
            silence_until=T0 + timedelta(minutes=3),
            comment="norepinephrine titrated up",
        ),
        "groundtruth": GroundTruth(
            run_id="sim-7",
            patient_id=PATIENT,
            bed="ICU1-07",
            scenario="septic_shock",
            onset=T0,
            end=T0 + timedelta(hours=2),
            organs=("cardiovascular", "renal"),
        ),
        "deadletter": DeadLetter(
            source="hl7",
            reason="hl7_parse_error",
            detail="MSH segment: field separator missing",
            original=NON_UTF8_FRAME,
            received_at=RECEIVED,
        ),
    }


# --- the base contract -----------------------------------------------------------------


def test_models_are_frozen() -> None:
    sample = vitals_sample()
    with pytest.raises(ValidationError, match="frozen"):
        sample.patient_id = "MRN-9999999"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        sample.measurements[0].value = 40.0  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        CONTEXT_EXAMPLES["weight"].root = CONTEXT_EXAMPLES["gcs"].root  # type: ignore[misc]


def test_unknown_fields_are_refused_at_every_level() -> None:
    with pytest.raises(ValidationError, match="heart_rate"):
        vitals_sample(heart_rate=118)
    with pytest.raises(ValidationError, match="confidence"):
        Measurement(
            quantity=Quantity.HEART_RATE,
            code_system=CodeSystem.MDC,
            code="147842",
            value=118,
            unit="/min",
            observed_at=T0,
            confidence=0.9,  # type: ignore[call-arg]
        )
    with pytest.raises(ValidationError, match="height_cm"):
        _context("weight", weight_kg=82.4, height_cm=180)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 3, 14, 2, 17, 5)
    with pytest.raises(ValidationError, match="timezone"):
        Measurement.of(Quantity.HEART_RATE, 118, naive)
    with pytest.raises(ValidationError, match="timezone"):
        vitals_sample(received_at=naive)
    with pytest.raises(ValidationError, match="timezone"):
        _context("weight", weight_kg=82.4, observed_at=naive)


def test_offsets_are_normalised_to_utc() -> None:
    paris_summer = timezone(timedelta(hours=2))
    local = datetime(2026, 7, 1, 4, 17, 5, tzinfo=paris_summer)
    m = Measurement.of(Quantity.ABP_MEAN, 61, local)
    assert m.observed_at == local  # the same instant ...
    assert m.observed_at.utcoffset() == timedelta(0)  # ... expressed in UTC
    assert m.observed_at.hour == 2
    assert json.loads(m.model_dump_json())["observed_at"] == "2026-07-01T02:17:05Z"
    parsed = Measurement.model_validate_json(
        m.model_dump_json().replace("2026-07-01T02:17:05Z", "2026-06-30T21:17:05-05:00")
    )
    assert parsed.observed_at.utcoffset() == timedelta(0)
    assert parsed.observed_at == datetime(2026, 7, 1, 2, 17, 5, tzinfo=UTC)


# --- measurements --------------------------------------------------------------------


def test_known_quantity_in_a_non_canonical_unit_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"temperature travels in 'Cel', got '\[degF\]'"):
        Measurement(
            quantity=Quantity.TEMPERATURE,
            code_system=CodeSystem.MDC,
            code="150344",
            code_label="MDC_TEMP",
            value=101.3,
            unit="[degF]",
            observed_at=T0,
        )
    with pytest.raises(ValidationError, match="mm\\[Hg\\]"):
        Measurement(
            quantity=Quantity.CVP,
            code_system=CodeSystem.MDC,
            code="150084",
            value=1.6,
            unit="kPa",
            observed_at=T0,
        )


def test_unknown_local_code_is_kept_with_its_own_unit_and_no_quantity() -> None:
    icp = Measurement(
        quantity=None,
        code_system=CodeSystem.LOCAL,
        code="ICP-MEAN",
        code_label="Intracranial pressure",
        value=14.0,
        unit="cm[H2O]",
        observed_at=T0,
        device_id=MONITOR,
    )
    message = vitals_sample(measurements=(*vitals_sample().measurements, icp))
    kept = message.measurements[-1]
    assert kept.quantity is None
    assert (kept.code_system, kept.code, kept.unit, kept.value) == (
        CodeSystem.LOCAL,
        "ICP-MEAN",
        "cm[H2O]",
        14.0,
    )
    # Known quantities are still read; the unknown one is not mistaken for any of them.
    assert message.value_of(Quantity.ABP_MEAN) == 61.0


@pytest.mark.parametrize(
    ("message_type", "measurement", "belongs_on"),
    [
        (VitalSigns, Measurement.of(Quantity.LACTATE, 4.3, T0), "labs"),
        (VitalSigns, Measurement.of(Quantity.RSO2_LEFT, 54, T0), "nirs"),
        (LabResults, Measurement.of(Quantity.HEART_RATE, 118, T0), "vitals"),
        (NirsSample, Measurement.of(Quantity.CRRT_TMP, 142, T0), "crrt"),
    ],
)
def test_a_quantity_on_the_wrong_topic_is_refused(
    message_type: type[VitalSigns], measurement: Measurement, belongs_on: str
) -> None:
    with pytest.raises(ValidationError, match=f"belongs on the {belongs_on} topic"):
        message_type(
            patient_id=PATIENT,
            source=HL7_SOURCE,
            received_at=RECEIVED,
            measurements=(measurement,),
        )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        Measurement.of(Quantity.ABP_MEAN, bad, T0)
    with pytest.raises(ValidationError, match="finite"):
        Measurement(
            quantity=None,
            code_system=CodeSystem.LOCAL,
            code="ICP-MEAN",
            value=bad,
            unit="mm[Hg]",
            observed_at=T0,
        )


# JSON cannot carry NaN/inf: pydantic writes them as null, which every reader then refuses.
# A payload that accepted them would be published and fail on every consumer.


def test_an_infinite_infusion_rate_is_refused() -> None:
    with pytest.raises(ValidationError, match="rate"):
        _context("infusion", drug="norepinephrine", rate=math.inf, rate_unit="ug/kg/min")


def test_a_nan_alert_threshold_is_refused() -> None:
    alert = example_messages()["alerts"].model_dump()
    with pytest.raises(ValidationError, match="thresholds"):
        AlertEvent.model_validate({**alert, "thresholds": {"map_median_1min_mmhg": math.nan}})


def test_a_measurement_needs_a_value_or_a_text_value() -> None:
    with pytest.raises(ValidationError, match="needs a value or a value_text"):
        Measurement(
            quantity=Quantity.HEART_RATE,
            code_system=CodeSystem.MDC,
            code="147842",
            unit="/min",
            observed_at=T0,
        )
    with pytest.raises(ValidationError, match="heart_rate needs a numeric value"):
        Measurement(
            quantity=Quantity.HEART_RATE,
            code_system=CodeSystem.MDC,
            code="147842",
            value_text="tachycardic",
            unit="/min",
            observed_at=T0,
        )
    mode = Measurement.of(Quantity.CRRT_MODE, "CVVHDF", T0)
    assert (mode.value, mode.value_text) == (None, "CVVHDF")


def test_an_observation_message_needs_at_least_one_measurement() -> None:
    with pytest.raises(ValidationError, match="at least 1"):
        vitals_sample(measurements=())


# --- the code table (CLINICAL.md "Codes") ----------------------------------------------

MDC, LOINC = CodeSystem.MDC, CodeSystem.LOINC
CLINICAL_CODES: list[tuple[CodeSystem, str, Quantity]] = [
    # Heart rate and pulse rate
    (MDC, "147842", Quantity.HEART_RATE),
    (MDC, "MDC_ECG_HEART_RATE", Quantity.HEART_RATE),
    (MDC, "MDC_ECG_CARD_BEAT_RATE", Quantity.HEART_RATE),
    (LOINC, "8867-4", Quantity.HEART_RATE),
    (MDC, "149530", Quantity.PULSE_RATE),
    (MDC, "MDC_PULS_OXIM_PULS_RATE", Quantity.PULSE_RATE),
    (MDC, "149546", Quantity.PULSE_RATE),
    (MDC, "MDC_PULS_RATE_NON_INV", Quantity.PULSE_RATE),
    # SpO2 and perfusion index
    (MDC, "150456", Quantity.SPO2),
    (MDC, "MDC_PULS_OXIM_SAT_O2", Quantity.SPO2),
    (LOINC, "59408-5", Quantity.SPO2),
    (LOINC, "2708-6", Quantity.SAO2),
    (MDC, "150448", Quantity.PERFUSION_INDEX),
    # Non-invasive BP: both MDC families and LOINC
    (MDC, "150021", Quantity.NBP_SYS),
    (MDC, "150022", Quantity.NBP_DIA),
    (MDC, "150023", Quantity.NBP_MEAN),
    (MDC, "MDC_PRESS_BLD_NONINV_SYS", Quantity.NBP_SYS),
    (MDC, "MDC_PRESS_BLD_NONINV_DIA", Quantity.NBP_DIA),
    (MDC, "MDC_PRESS_BLD_NONINV_MEAN", Quantity.NBP_MEAN),
    (MDC, "150301", Quantity.NBP_SYS),
    (MDC, "150302", Quantity.NBP_DIA),
    (MDC, "150303", Quantity.NBP_MEAN),
    (MDC, "MDC_PRESS_CUFF_SYS", Quantity.NBP_SYS),
    (MDC, "MDC_PRESS_CUFF_DIA", Quantity.NBP_DIA),
    (MDC, "MDC_PRESS_CUFF_MEAN", Quantity.NBP_MEAN),
    (LOINC, "8480-6", Quantity.NBP_SYS),
    (LOINC, "8462-4", Quantity.NBP_DIA),
    (LOINC, "8478-0", Quantity.NBP_MEAN),
    # Arterial BP: both MDC families and LOINC
    (MDC, "150033", Quantity.ABP_SYS),
    (MDC, "150034", Quantity.ABP_DIA),
    (MDC, "150035", Quantity.ABP_MEAN),
    (MDC, "MDC_PRESS_BLD_ART_SYS", Quantity.ABP_SYS),
    (MDC, "MDC_PRESS_BLD_ART_DIA", Quantity.ABP_DIA),
    (MDC, "MDC_PRESS_BLD_ART_MEAN", Quantity.ABP_MEAN),
    (MDC, "150037", Quantity.ABP_SYS),
    (MDC, "150038", Quantity.ABP_DIA),
    (MDC, "150039", Quantity.ABP_MEAN),
    (MDC, "MDC_PRESS_BLD_ART_ABP_SYS", Quantity.ABP_SYS),
    (MDC, "MDC_PRESS_BLD_ART_ABP_DIA", Quantity.ABP_DIA),
    (MDC, "MDC_PRESS_BLD_ART_ABP_MEAN", Quantity.ABP_MEAN),
    (LOINC, "76215-3", Quantity.ABP_SYS),
    (LOINC, "76213-8", Quantity.ABP_DIA),
    (LOINC, "76214-6", Quantity.ABP_MEAN),
    # Respiratory rate, temperature, CVP, EtCO2
    (MDC, "151562", Quantity.RESP_RATE),
    (MDC, "MDC_RESP_RATE", Quantity.RESP_RATE),
    (LOINC, "9279-1", Quantity.RESP_RATE),
    (MDC, "150344", Quantity.TEMPERATURE),
    (MDC, "MDC_TEMP", Quantity.TEMPERATURE),
    (LOINC, "8310-5", Quantity.TEMPERATURE),
    (MDC, "150084", Quantity.CVP),
    (MDC, "150087", Quantity.CVP_MEAN),
    (LOINC, "60985-9", Quantity.CVP),
    (MDC, "151708", Quantity.ETCO2),
    (LOINC, "19889-5", Quantity.ETCO2),
]


@pytest.mark.parametrize(("system", "code", "quantity"), CLINICAL_CODES)
def test_every_code_of_clinical_md_resolves_to_its_quantity(
    system: CodeSystem, code: str, quantity: Quantity
) -> None:
    assert lookup(system, code) is quantity


def test_codes_are_looked_up_within_their_own_system_only() -> None:
    assert lookup(CodeSystem.MDC, "999999") is None
    assert lookup(CodeSystem.LOINC, "150039") is None  # an MDC code is not a LOINC code
    assert lookup(CodeSystem.MDC, "8867-4") is None  # and a LOINC code is not an MDC code
    assert lookup(CodeSystem.LOCAL, "147842") is None


def test_rso2_has_private_codes_on_the_nirs_topic() -> None:
    for quantity in (Quantity.RSO2_LEFT, Quantity.RSO2_RIGHT):
        info = QUANTITIES[quantity]
        assert info.category is Category.NIRS
        assert info.mdc == ()  # no public MDC code exists (CLINICAL.md)
        assert info.primary[0] is CodeSystem.VIGIL


def test_the_table_covers_every_quantity() -> None:
    assert set(QUANTITIES) == set(Quantity)


@pytest.mark.parametrize("quantity", list(Quantity))
def test_each_quantitys_primary_code_looks_back_up_to_itself(quantity: Quantity) -> None:
    system, code, label = QUANTITIES[quantity].primary
    assert lookup(system, code) is quantity
    if label is not None:
        assert lookup(system, label) is quantity
    if QUANTITIES[quantity].numeric:
        made = Measurement.of(quantity, 42.0, T0)
        assert (made.code_system, made.code, made.code_label) == (system, code, label)
        assert made.unit == QUANTITIES[quantity].ucum_unit


# --- JSON round-trips ------------------------------------------------------------------


@pytest.mark.parametrize("topic", [spec.base_name for spec in TOPICS])
def test_each_topic_payload_survives_a_json_round_trip(topic: str) -> None:
    message = example_messages()[topic]
    assert type(message).model_validate_json(message.model_dump_json()) == message


def test_every_context_kind_has_an_example() -> None:
    kinds = set(ContextEvent.model_json_schema()["discriminator"]["mapping"])
    assert kinds == set(CONTEXT_EXAMPLES)


@pytest.mark.parametrize("kind", sorted(CONTEXT_EXAMPLES))
def test_each_context_kind_survives_a_json_round_trip(kind: str) -> None:
    event = CONTEXT_EXAMPLES[kind]
    back = ContextEvent.model_validate_json(event.model_dump_json())
    assert back == event
    assert back.root.kind == kind
    assert type(back.root) is type(event.root)


def test_context_kind_selects_the_event_type_and_its_fields() -> None:
    with pytest.raises(ValidationError, match="weight_kg"):
        _context("weight", volume_ml=22.0)  # urine-output fields on a weight event
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        _context("blood_pressure", weight_kg=82.4)


def test_deadletter_keeps_non_utf8_original_bytes_through_base64_json() -> None:
    letter = DeadLetter(
        source="hl7",
        reason="hl7_parse_error",
        detail="MSH segment: field separator missing",
        original=NON_UTF8_FRAME,
        original_topic=None,
        received_at=RECEIVED,
    )
    assert letter.original == NON_UTF8_FRAME
    wire = json.loads(letter.model_dump_json())
    # Remote consumers decode it as the published schema says: base64 or base64url.
    declared = DeadLetter.model_json_schema(mode="serialization")["properties"]["original"]
    altchars = {"base64": b"+/", "base64url": b"-_"}[declared["format"]]
    assert base64.b64decode(wire["original"], altchars=altchars, validate=True) == NON_UTF8_FRAME
    back = DeadLetter.model_validate_json(letter.model_dump_json())
    assert back.original == NON_UTF8_FRAME
    assert back == letter


def test_deadletter_does_not_reinterpret_text_that_looks_like_base64() -> None:
    """A refused payload that happens to be valid base64 text must be kept as sent."""
    refused = b"ABCD"  # four ASCII letters: also a valid base64 string
    letter = DeadLetter(
        source="worker.vitals",
        reason="invalid_json",
        detail="Expecting value: line 1 column 1",
        original=refused,
        original_topic="icu.vitals",
        original_partition=2,
        original_offset=88231,
        original_key=PATIENT,
        received_at=RECEIVED,
    )
    assert letter.original == refused
    assert DeadLetter.model_validate_json(letter.model_dump_json()).original == refused


def test_deadletter_reads_the_original_from_the_encoding_its_schema_declares() -> None:
    declared = DeadLetter.model_json_schema(mode="serialization")["properties"]["original"]
    encode = {"base64": base64.b64encode, "base64url": base64.urlsafe_b64encode}[declared["format"]]
    wire = {
        "source": "hl7",
        "reason": "hl7_parse_error",
        "detail": "MSH segment: field separator missing",
        "original": encode(NON_UTF8_FRAME).decode("ascii"),
        "received_at": "2026-03-14T03:17:05.420+01:00",
    }
    letter = DeadLetter.model_validate_json(json.dumps(wire))
    assert letter.original == NON_UTF8_FRAME
    assert letter.received_at == RECEIVED


# --- JSON Schema export ----------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    directory = tmp_path_factory.mktemp("schemas") / "out"
    written = export_json_schemas(directory)
    assert sorted(written) == sorted(directory.iterdir())
    return {
        path.name.removesuffix(".schema.json"): json.loads(path.read_text()) for path in written
    }


def test_export_writes_exactly_one_file_per_topic(
    exported: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    assert sorted(exported) == sorted(spec.base_name for spec in TOPICS)
    assert len(exported) == len(TOPICS) == 11
    paths = export_json_schemas(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


@pytest.mark.parametrize("topic", [spec.base_name for spec in TOPICS])
def test_exported_schema_is_valid_draft_2020_12(
    exported: dict[str, dict[str, Any]], topic: str
) -> None:
    schema = exported[topic]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/{topic}.schema.json")


@pytest.mark.parametrize("topic", [spec.base_name for spec in TOPICS])
def test_a_realistic_message_validates_against_its_topic_schema(
    exported: dict[str, dict[str, Any]], topic: str
) -> None:
    validator = Draft202012Validator(exported[topic])
    wire = json.loads(example_messages()[topic].model_dump_json())
    errors = [e.message for e in validator.iter_errors(wire)]
    assert errors == []


@pytest.mark.parametrize("topic", [spec.base_name for spec in TOPICS])
def test_a_message_with_an_extra_field_fails_its_topic_schema(
    exported: dict[str, dict[str, Any]], topic: str
) -> None:
    validator = Draft202012Validator(exported[topic])
    wire = json.loads(example_messages()[topic].model_dump_json())
    wire["priority_override"] = "high"
    assert not validator.is_valid(wire)


def test_a_vitals_message_with_an_extra_field_in_a_measurement_fails_the_schema(
    exported: dict[str, dict[str, Any]],
) -> None:
    validator = Draft202012Validator(exported["vitals"])
    wire = json.loads(vitals_sample().model_dump_json())
    wire["measurements"][0]["quality"] = "good"
    assert not validator.is_valid(wire)


# --- topic registry --------------------------------------------------------------------


def test_registry_prefixes_every_topic_name() -> None:
    registry = TopicRegistry(prefix="hospA.icu.", partitions=12)
    assert registry.name("vitals") == "hospA.icu.vitals"
    assert registry.name("alerts.ack") == "hospA.icu.alerts.ack"
    assert registry.vitals == "hospA.icu.vitals"
    assert registry.alerts == "hospA.icu.alerts"
    assert registry.deadletter == "hospA.icu.deadletter"
    assert [registry.name(s.base_name) for s in registry] == [
        "hospA.icu." + s.base_name for s in TOPICS
    ]
    with pytest.raises(KeyError, match="no topic 'vital'"):
        registry.name("vital")


def test_deadletter_is_kept_forever_and_not_co_partitioned() -> None:
    registry = TopicRegistry(prefix="icu.", partitions=12)
    assert registry.configs("deadletter")["retention.ms"] == "-1"
    assert registry.spec("deadletter").co_partitioned is False
    assert registry.spec("deadletter").key == "source"
    assert registry.partitions_of("deadletter") == 1


def test_raw_topics_share_the_partition_count() -> None:
    registry = TopicRegistry(prefix="icu.", partitions=12)
    raw = ("vitals", "nirs", "crrt", "labs", "context")
    assert {registry.partitions_of(t) for t in raw} == {12}
    assert all(registry.spec(t).key == "patient id" for t in raw)
    # Derived topics are keyed by patient too and so co-partitioned with the raw ones.
    assert {registry.partitions_of(t) for t in ("features", "risk", "alerts")} == {12}


def test_ground_truth_refuses_an_end_before_its_onset() -> None:
    with pytest.raises(ValidationError, match="end before onset"):
        GroundTruth(run_id="r", patient_id=PATIENT, scenario="x", onset=T0, end=T0 - timedelta(1))
