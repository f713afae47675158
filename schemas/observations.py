"""Raw measurement topics: vitals, nirs, crrt and labs share one coded envelope.

Every measurement carries its code (MDC, LOINC or Vigil's private code), its UCUM
unit, its source device and its observation time. Known quantities travel in their
canonical unit (conversion happens once, in the adapters); unknown codes are kept
with ``quantity=None`` and whatever unit the sender gave.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from schemas.codes import QUANTITIES, Category, CodeSystem, Quantity
from schemas.common import Contract, PatientId, SourceInfo, UtcDatetime


class Measurement(Contract):
    """One coded observation of one quantity at one time."""

    quantity: Quantity | None = Field(
        description="Canonical field; null when the code is unknown to Vigil (kept, flagged)"
    )
    code_system: CodeSystem
    code: str = Field(min_length=1, max_length=64, description="e.g. MDC 150039, LOINC 2524-7")
    code_label: str | None = Field(
        default=None, max_length=128, description="Reference id, e.g. MDC_PRESS_BLD_ART_ABP_MEAN"
    )
    value: float | None = Field(default=None, description="Numeric value, in `unit`")
    value_text: str | None = Field(default=None, max_length=256, description="Coded/text value")
    unit: str = Field(max_length=32, description="UCUM unit (canonical for known quantities)")
    observed_at: UtcDatetime = Field(description="Device observation time (event time)")
    device_id: str | None = Field(default=None, max_length=128)
    containment: str | None = Field(
        default=None, max_length=64, description="IEEE 11073 MDS.VMD.CHAN.METRIC path"
    )
    artefact: bool = Field(default=False, description="Implausible or flagged by the device")

    @model_validator(mode="after")
    def _check_value_and_unit(self) -> Self:
        if self.value is None and self.value_text is None:
            raise ValueError("a measurement needs a value or a value_text")
        if self.quantity is not None:
            info = QUANTITIES[self.quantity]
            if self.unit != info.ucum_unit:
                raise ValueError(
                    f"{self.quantity.value} travels in {info.ucum_unit!r}, got {self.unit!r}"
                )
            if info.numeric and self.value is None:
                raise ValueError(f"{self.quantity.value} needs a numeric value")
        return self

    @classmethod
    def of(
        cls,
        quantity: Quantity,
        value: float | str,
        observed_at: datetime,
        *,
        device_id: str | None = None,
        artefact: bool = False,
    ) -> Measurement:
        """A measurement coded with the quantity's primary code and canonical unit.

        >>> from datetime import UTC, datetime
        >>> m = Measurement.of(Quantity.ABP_MEAN, 62.0, datetime(2026, 1, 1, tzinfo=UTC))
        >>> (m.code_system.value, m.code, m.unit, m.value)
        ('MDC', '150035', 'mm[Hg]', 62.0)
        """
        info = QUANTITIES[quantity]
        system, code, label = info.primary
        numeric = isinstance(value, int | float)
        return cls(
            quantity=quantity,
            code_system=system,
            code=code,
            code_label=label,
            value=float(value) if numeric else None,
            value_text=None if numeric else str(value),
            unit=info.ucum_unit,
            observed_at=observed_at,
            device_id=device_id,
            artefact=artefact,
        )


class ObservationMessage(Contract):
    """Envelope shared by the raw measurement topics; key = patient id."""

    category: ClassVar[Category]

    schema_version: Literal[1] = 1
    patient_id: PatientId
    bed: str | None = Field(default=None, max_length=32, description="Bed label, e.g. ICU1-07")
    care_unit: str | None = Field(default=None, max_length=32)
    source: SourceInfo
    received_at: UtcDatetime = Field(description="When the adapter received it (wall clock)")
    measurements: tuple[Measurement, ...] = Field(min_length=1, max_length=512)

    @model_validator(mode="after")
    def _check_category(self) -> Self:
        for m in self.measurements:
            if m.quantity is not None and QUANTITIES[m.quantity].category is not self.category:
                raise ValueError(
                    f"{m.quantity.value} belongs on the {QUANTITIES[m.quantity].category} topic,"
                    f" not {self.category}"
                )
        return self

    @property
    def observed_at(self) -> datetime:
        """Event time of the message: its latest observation."""
        return max(m.observed_at for m in self.measurements)

    def latest(self, quantity: Quantity) -> Measurement | None:
        """The last numeric, non-artefact measurement of ``quantity`` in this message."""
        found: Measurement | None = None
        for m in self.measurements:
            if m.quantity is quantity and m.value is not None and not m.artefact:
                found = m
        return found

    def value_of(self, quantity: Quantity) -> float | None:
        """The value of :meth:`latest`, if any."""
        found = self.latest(quantity)
        return found.value if found is not None else None


class VitalSigns(ObservationMessage):
    """Vital-sign sample(s) from a bedside monitor: HR, BP, SpO2, RR, temperature, CVP ..."""

    category: ClassVar[Category] = Category.VITALS


class NirsSample(ObservationMessage):
    """Cerebral oximetry: rSO2 left/right, and the device's baseline when it sends one."""

    category: ClassVar[Category] = Category.NIRS


class CrrtStatus(ObservationMessage):
    """CRRT machine status: mode, flows, pressures, fluid removed, machine alarm state."""

    category: ClassVar[Category] = Category.CRRT


class LabResults(ObservationMessage):
    """Laboratory results coded with LOINC; ``observed_at`` is the specimen time."""

    category: ClassVar[Category] = Category.LABS

    order_id: str | None = Field(default=None, max_length=64, description="Filler order number")
    result_status: Literal["P", "F", "C"] = Field(
        default="F", description="HL7 OBX-11: preliminary, final, corrected"
    )
