"""The context topic: admission, transfer, discharge, weight, drugs, charting, labels.

One discriminated union on ``kind``; every event carries the patient, its event
time (``observed_at``, when it happened or was charted) and when it was received.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, RootModel

from schemas.common import Contract, PatientId, SourceInfo, UtcDatetime


class _ContextBase(Contract):
    schema_version: Literal[1] = 1
    patient_id: PatientId
    observed_at: UtcDatetime = Field(description="When it happened or was charted (event time)")
    received_at: UtcDatetime
    source: SourceInfo


class Admission(_ContextBase):
    """ADT A01: the patient is admitted to a bed."""

    kind: Literal["admission"] = "admission"
    bed: str | None = Field(default=None, max_length=32)
    care_unit: str | None = Field(default=None, max_length=32)
    site: str | None = Field(default=None, max_length=64)
    age_years: float | None = Field(default=None, ge=0, le=130)
    sex: Literal["female", "male", "other", "unknown"] = "unknown"


class Transfer(_ContextBase):
    """ADT A02: the patient moves to another bed or unit."""

    kind: Literal["transfer"] = "transfer"
    bed: str | None = Field(default=None, max_length=32)
    care_unit: str | None = Field(default=None, max_length=32)
    site: str | None = Field(default=None, max_length=64)


class Discharge(_ContextBase):
    """ADT A03: the patient leaves the unit."""

    kind: Literal["discharge"] = "discharge"
    disposition: Literal["home", "ward", "transfer", "death", "unknown"] = "unknown"


class Weight(_ContextBase):
    """Body weight, needed for weight-normalised urine output and doses."""

    kind: Literal["weight"] = "weight"
    weight_kg: float = Field(gt=0, le=500)


class Drug(StrEnum):
    """Vasoactive and diuretic drugs the scores use (SOFA cardiovascular, FST)."""

    NOREPINEPHRINE = "norepinephrine"
    EPINEPHRINE = "epinephrine"
    DOPAMINE = "dopamine"
    DOBUTAMINE = "dobutamine"
    VASOPRESSIN = "vasopressin"
    PHENYLEPHRINE = "phenylephrine"
    FUROSEMIDE = "furosemide"


class Infusion(_ContextBase):
    """A continuous infusion rate set at ``observed_at`` (0 = stopped)."""

    kind: Literal["infusion"] = "infusion"
    drug: Drug
    rate: float = Field(ge=0)
    rate_unit: Literal["ug/kg/min", "U/min", "mg/h"] = Field(
        description="SOFA catecholamine doses are in ug/kg/min"
    )


class DrugDose(_ContextBase):
    """A bolus dose, e.g. furosemide for a furosemide stress test."""

    kind: Literal["drug_dose"] = "drug_dose"
    drug: Drug
    dose_mg: float = Field(gt=0)


class Gcs(_ContextBase):
    """Charted Glasgow Coma Scale."""

    kind: Literal["gcs"] = "gcs"
    total: int = Field(ge=3, le=15)
    eye: int | None = Field(default=None, ge=1, le=4)
    verbal: int | None = Field(default=None, ge=1, le=5)
    motor: int | None = Field(default=None, ge=1, le=6)


class UrineOutput(_ContextBase):
    """Urine volume collected over a period ending at ``observed_at``."""

    kind: Literal["urine_output"] = "urine_output"
    volume_ml: float = Field(ge=0, le=10000)
    period_start: UtcDatetime | None = None


class FluidBalanceEntry(_ContextBase):
    """Fluid given or removed (other than urine and CRRT, which have their own inputs)."""

    kind: Literal["fluid"] = "fluid"
    direction: Literal["in", "out"]
    volume_ml: float = Field(ge=0, le=20000)
    route: str | None = Field(default=None, max_length=64)


class RenalVenousDoppler(_ContextBase):
    """Charted intrarenal venous Doppler flow pattern (Beaubien-Souligny 2020)."""

    kind: Literal["renal_venous_doppler"] = "renal_venous_doppler"
    pattern: Literal["continuous", "biphasic_discontinuous", "monophasic_discontinuous"]
    ivc_diameter_cm: float | None = Field(default=None, gt=0, le=5)


class CapillaryRefill(_ContextBase):
    """Charted capillary refill time (ANDROMEDA-SHOCK)."""

    kind: Literal["capillary_refill"] = "capillary_refill"
    seconds: float = Field(ge=0, le=30)


class OutcomeLabel(_ContextBase):
    """An outcome label for online learning, e.g. PhysioNet 2019 SepsisLabel."""

    kind: Literal["outcome_label"] = "outcome_label"
    outcome: str = Field(min_length=1, max_length=64, description="e.g. sepsis")
    label: bool
    label_source: str = Field(max_length=64, description="e.g. physionet2019")


PatientContext = Annotated[
    Admission
    | Transfer
    | Discharge
    | Weight
    | Infusion
    | DrugDose
    | Gcs
    | UrineOutput
    | FluidBalanceEntry
    | RenalVenousDoppler
    | CapillaryRefill
    | OutcomeLabel,
    Field(discriminator="kind"),
]


class ContextEvent(RootModel[PatientContext]):
    """A context topic payload: one of the events above, told apart by ``kind``."""

    model_config = {"frozen": True}
