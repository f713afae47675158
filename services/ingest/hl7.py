"""HL7 v2 core: IHE PCD-01 / lab ORU^R01 and ADT A01-A03 to topic records, and ACKs (pure).

- ORU^R01 (IHE PCD TF-2 PCD-01 "Communicate PCD Data", HL7 v2.6 ch. 7): every OBX
  becomes a :class:`~schemas.observations.Measurement` through
  :func:`schemas.units.normalise`; measurements are routed by their quantity's category
  to one VitalSigns / NirsSample / CrrtStatus / LabResults record per patient per message.
- ADT^A01/A02/A03 (HL7 v2.6 ch. 3): one Admission / Transfer / Discharge on ``context``.
- ORU^R40 (PCD-04 alarms) and everything else: ``unsupported_message_type``.

:func:`parse_hl7` raises only :class:`~services.ingest.InputRefusedError` (in fact its
subclass :class:`Hl7RefusedError`, which also carries the HL7 table 0357 error code for
the ACK). :func:`build_ack` writes the acknowledgement (v2.6 2.9.2, 2.15.8, 2.15.5 ERR).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

from pydantic import BaseModel, ValidationError

from schemas.codes import QUANTITIES, Category, CodeSystem, Quantity, lookup
from schemas.common import SourceInfo
from schemas.context import Admission, ContextEvent, Discharge, Transfer
from schemas.observations import (
    CrrtStatus,
    LabResults,
    Measurement,
    NirsSample,
    ObservationMessage,
    VitalSigns,
)
from schemas.units import canonical_unit_spelling, normalise
from services.ingest import InputRefusedError, Outbound
from services.ingest.hl7_syntax import (
    _CHARSETS,
    ERROR_TEXT,
    Encoding,
    Hl7Header,
    Hl7RefusedError,
    RawMessage,
    Segment,
    decode_message,
    dtm_offset,
    escape,
    format_dtm,
    header_of,
    parse_dtm,
    recover_header,
)

__all__ = [
    "Hl7Header",
    "Hl7Message",
    "Hl7RefusedError",
    "build_ack",
    "parse_hl7",
    "recover_header",
]

ADAPTER = "hl7"
_PATIENT_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,64}$")
_NM = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$")
_SUB_ID_PART = re.compile(r"[0-9]{1,9}")
_MAX_MEASUREMENTS = 512  # ObservationMessage.measurements max_length
_FUTURE_SLACK = timedelta(minutes=5)

_TOPIC_MODEL: dict[Category, type[ObservationMessage]] = {
    Category.VITALS: VitalSigns,
    Category.NIRS: NirsSample,
    Category.CRRT: CrrtStatus,
    Category.LABS: LabResults,
}
# OBX-11 (table 0085) statuses that carry no usable result.
_NO_RESULT_STATUS = {
    "X": "result cannot be obtained",
    "D": "deleted",
    "W": "posted as wrong",
    "N": "not asked",
    "I": "pending",
    "O": "order detail only",
}
# 11073 MeasurementStatus carried in OBX-8 (PCD TF-2): the value is kept, flagged.
_ARTEFACT_FLAGS = frozenset(
    {"INV", "INVALID", "QUES", "QUESTIONABLE", "CAL", "CALIBRATION-ONGOING", "TEST", "DEMO"}
)
_MDIL_CODE = re.compile(r"[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}")
_ARRAY_TYPES = frozenset({"NA", "NR", "MA"})
_SKIPPED_TYPES = frozenset({"ED", "RP", "AD", "PN", "XAD", "XPN", "CP", "MO"})
_CODED_TYPES = frozenset({"CWE", "CE", "CNE", "CF", "IS", "ID"})

ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
_ERROR_ACKS = frozenset({"AE", "AR", "CE", "CR"})
_REASON_CODES = {
    "hl7_parse_error": "100",
    "unsupported_message_type": "200",
    "invalid_message": "102",
    "no_patient_identity": "101",
}


@dataclass(frozen=True)
class Hl7Message:
    """A parsed message: its header, the records to publish and what was odd about it."""

    control_id: str  # MSH-10
    message_type: str  # MSH-9.1^MSH-9.2, e.g. ORU^R01
    header: Hl7Header
    records: tuple[Outbound, ...]
    warnings: tuple[str, ...] = ()
    sent_at: datetime | None = None  # MSH-7, UTC


def parse_hl7(raw: bytes, *, received_at: datetime, site_tz: tzinfo) -> Hl7Message:
    """Parse one HL7 v2 message (one MLLP frame) into topic records.

    Times without a UTC offset take MSH-7's offset, else ``site_tz`` (CLINICAL.md
    "Codes"). Raises :class:`InputRefusedError` (reason ``hl7_parse_error``,
    ``unsupported_message_type``, ``invalid_message`` or ``no_patient_identity``) and
    nothing else, whatever the bytes.

    >>> from datetime import UTC, datetime
    >>> raw = (b"MSH|^~\\\\&|MON|ICU|||20260101120000+0100||ORU^R01|c1|P|2.6\\r"
    ...        b"PID|||p1^^^^MR\\rPV1||I|ICU^^07\\rOBR|1|||x|||20260101115900\\r"
    ...        b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|94|262688^MDC_DIM_PERCENT^MDC")
    >>> m = parse_hl7(raw, received_at=datetime(2026, 1, 1, 11, tzinfo=UTC), site_tz=UTC)
    >>> r = m.records[0]
    >>> (r.topic, r.key, r.payload.bed, r.payload.value_of(Quantity.SPO2))
    ('vitals', 'p1', '07', 94.0)
    >>> r.payload.measurements[0].observed_at.isoformat()
    '2026-01-01T10:59:00+00:00'
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    try:
        return _parse(raw, received_at=received_at, site_tz=site_tz)
    except InputRefusedError:
        raise
    except Exception as exc:  # the contract: only InputRefusedError leaves this function
        raise Hl7RefusedError(
            "invalid_message",
            f"internal error while parsing ({type(exc).__name__}: {exc})",
            hl7_code="207",
        ) from exc


# -- the parse ------------------------------------------------------------------------


@dataclass
class _Ctx:
    msg: RawMessage
    header: Hl7Header
    received_at: datetime
    site_tz: tzinfo
    msh_tz: tzinfo | None
    sent_at: datetime | None
    warnings: list[str] = field(default_factory=list)

    def dtm(self, seg: Segment, n: int, value: str | None = None) -> datetime | None:
        """SEG-n as a UTC datetime (None when empty); a bad value refuses the message."""
        text = self.msg.text(seg, n) if value is None else value
        if not text or text == '""':
            return None
        try:
            return parse_dtm(text, default_tz=self.msh_tz, site_tz=self.site_tz)
        except ValueError as exc:
            raise _invalid(f"{seg.name}-{n}: {exc}", seg, n, "102") from None


def _invalid(message: str, seg: Segment, n: int, code: str) -> Hl7RefusedError:
    return Hl7RefusedError(
        "invalid_message", message, hl7_code=code, location=(seg.name, seg.index, n)
    )


def _parse(raw: bytes, *, received_at: datetime, site_tz: tzinfo) -> Hl7Message:
    """:func:`parse_hl7` without the last-resort guard (the property tests call this)."""
    msg = decode_message(raw)
    header = header_of(msg)
    msh = msg.segments[0]
    warnings = list(msg.warnings)
    msh7 = header.message_datetime
    try:
        msh_tz = dtm_offset(msh7) if msh7 else None
    except ValueError:
        msh_tz = None
    ctx = _Ctx(msg, header, received_at.astimezone(UTC), site_tz, msh_tz, None, warnings)
    try:
        ctx.sent_at = ctx.dtm(msh, 7)
    except Hl7RefusedError as exc:
        # MSH-7 is the message's own time, not an observation's: the observations
        # carry theirs (OBX-14 / OBR-7), so a bad MSH-7 is no reason to lose them.
        warnings.append(f"{exc} (ignored: observation times come from OBX-14/OBR-7)")
    if ctx.sent_at is None and not msh7:
        warnings.append("MSH-7 (message date/time) missing")
    if not header.control_id:
        warnings.append("MSH-10 (message control id) missing")
    if header.version_id and not header.version_id.startswith("2."):
        warnings.append(f"MSH-12 version {header.version_id!r} is not HL7 v2.x")
    if header.processing_id[:1] not in ("", "P"):
        warnings.append(f"MSH-11 processing id {header.processing_id!r} (not production)")

    code, _, trigger = header.message_type.partition(header.encoding.component)
    if code == "ADT" and not trigger:
        evn = msg.find("EVN")
        trigger = msg.text(evn, 1) if evn else ""
    kind = f"{code}^{trigger}" if trigger else code
    if code == "ORU" and trigger == "R01":
        records = _oru(ctx)
    elif code == "ORU" and trigger == "R40":
        raise Hl7RefusedError(
            "unsupported_message_type",
            "ORU^R40 (IHE PCD-04 alarm report) is not ingested: Vigil takes periodic"
            " observations (PCD-01 ORU^R01) and raises its own alarms",
            hl7_code="200",
        )
    elif code == "ADT" and trigger in ("A01", "A02", "A03"):
        records = _adt(ctx, trigger)
    elif code == "ADT":
        raise Hl7RefusedError(
            "unsupported_message_type",
            f"ADT event {trigger or '(none)'} is not ingested (only A01, A02, A03)",
            hl7_code="201",
        )
    else:
        raise Hl7RefusedError(
            "unsupported_message_type",
            f"message type {kind or '(empty MSH-9)'} is not ingested"
            " (ORU^R01 observations, ADT^A01/A02/A03)",
            hl7_code="200",
        )
    return Hl7Message(
        control_id=header.control_id,
        message_type=f"{code}^{trigger}" if trigger else code,
        header=header,
        records=tuple(records),
        warnings=tuple(warnings),
        sent_at=ctx.sent_at,
    )


def _source(ctx: _Ctx, device_id: str | None) -> SourceInfo:
    control_id = ctx.header.control_id
    if len(control_id) > 64:
        ctx.warnings.append("MSH-10 longer than 64 characters: truncated in the source")
        control_id = control_id[:64]
    if device_id is None:
        msg = ctx.msg
        app = msg.unescape(msg.sub(msg.comp(ctx.header.sending_application, 1), 1)).strip()
        device_id = app or None
    return SourceInfo(
        adapter=ADAPTER,
        device_id=_clip(ctx, device_id, 128, "device id"),
        message_control_id=control_id or None,
    )


def _clip(ctx: _Ctx, value: str | None, limit: int, what: str) -> str | None:
    if value is None or len(value) <= limit:
        return value
    ctx.warnings.append(f"{what} {value[:24]!r}... longer than {limit} characters: truncated")
    return value[:limit]


# -- patient and location -----------------------------------------------------------


def _patient_id(ctx: _Ctx, pid: Segment) -> str:
    """PID-3 (prefer identifier type MR, then PI, then the first), else PID-2 / PID-4."""
    msg = ctx.msg
    ranked: list[tuple[int, str, str]] = []
    for n in (3, 2, 4):
        for i, rep in enumerate(msg.reps(pid.raw(n))):
            ident = msg.unescape(msg.sub(msg.comp(rep, 1), 1)).strip()
            kind = msg.unescape(msg.comp(rep, 5)).strip().upper()
            if ident and ident != '""':
                rank = {"MR": 0, "PI": 1}.get(kind, 2) if n == 3 else 10 * n
                ranked.append((rank * 1000 + i, ident, f"PID-{n}"))
    ranked.sort()
    for _, ident, where in ranked:
        if _PATIENT_ID.match(ident):
            if where != "PID-3":
                ctx.warnings.append(f"PID-3 empty: patient id taken from {where}")
            return ident
        ctx.warnings.append(f"{where} identifier {ident[:32]!r} is not a valid patient key")
    raise Hl7RefusedError(
        "no_patient_identity",
        "no usable patient identifier in PID-3 (nor PID-2/PID-4): need 1-64 characters"
        " of A-Z a-z 0-9 . _ : @ -",
        hl7_code="101",
        location=("PID", pid.index, 3),
    )


@dataclass(frozen=True)
class _Location:
    bed: str | None = None
    care_unit: str | None = None
    site: str | None = None


def _location(ctx: _Ctx, pv1: Segment | None) -> _Location:
    """PV1-3 (PL): point of care^room^bed^facility -> unit, bed label, site."""
    if pv1 is None:
        return _Location()
    msg = ctx.msg
    unit = msg.text(pv1, 3, 1) or None
    bed = msg.text(pv1, 3, 3) or None
    site = msg.text(pv1, 3, 4) or None
    reps = msg.reps(pv1.raw(3))
    raw_bed = msg.comp(reps[0], 3) if reps else ""
    sub = ctx.header.encoding.subcomponent
    if sub in raw_bed:
        # PL.3 (bed) is an IS without subcomponents, but some gateways send ward&bed
        # there: the bed is the second part, the ward stands in for an empty PL.1.
        parts = [msg.unescape(p).strip() for p in raw_bed.split(sub)]
        bed = parts[1] if len(parts) > 1 and parts[1] else (parts[0] or None)
        unit = unit or parts[0] or None
        ctx.warnings.append(f"PV1-3.3 {raw_bed[:32]!r} has subcomponents: bed {bed!r}")
    return _Location(
        bed=_clip(ctx, bed, 32, "PV1-3 bed"),
        care_unit=_clip(ctx, unit, 32, "PV1-3 point of care"),
        site=_clip(ctx, site, 64, "PV1-3 facility"),
    )


# -- ORU^R01 ------------------------------------------------------------------------


@dataclass
class _Group:
    """One patient's observations in one ORU."""

    patient_id: str
    location: _Location
    measurements: list[tuple[Measurement, str]] = field(default_factory=list)  # (m, OBX-11)
    mds_ids: list[str] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    mdc_coded: bool = False
    loinc_coded: bool = False


@dataclass
class _Order:
    """The OBR an OBX belongs to: its times and its device hierarchy (OBX-4 -> OBX-18)."""

    segment: Segment | None
    time: datetime | None
    devices: dict[tuple[int, ...], str] = field(default_factory=dict)
    warned_time: bool = False


def _oru(ctx: _Ctx) -> list[Outbound]:
    msg = ctx.msg
    groups: dict[str, _Group] = {}
    group: _Group | None = None
    order = _Order(None, None)
    all_devices: dict[tuple[int, ...], str] = {}
    for seg in msg.segments[1:]:
        if seg.name == "PID":
            pid = _patient_id(ctx, seg)
            group = groups.setdefault(pid, _Group(pid, _Location()))
        elif seg.name == "PV1" and group is not None:
            group.location = _location(ctx, seg)
        elif seg.name == "OBR":
            time = ctx.dtm(seg, 7)
            order = _Order(seg, time)
            if group is not None:
                filler = msg.text(seg, 3)
                if filler:
                    group.order_ids.append(filler)
        elif seg.name == "OBX":
            if group is None:
                raise Hl7RefusedError(
                    "no_patient_identity",
                    f"OBX {seg.index} before any PID segment",
                    hl7_code="100",
                    location=("OBX", seg.index, 0),
                )
            _obx(ctx, seg, group, order, all_devices)
    if not groups:
        raise Hl7RefusedError("no_patient_identity", "ORU without a PID segment", hl7_code="100")
    records: list[Outbound] = []
    for g in groups.values():
        records.extend(_observation_records(ctx, g))
    if not records:
        ctx.warnings.append("no observations with a value: nothing to publish")
    return records


def _containment(text: str, *, single_level: bool = False) -> tuple[int, ...] | None:
    """OBX-4 as an MDS.VMD.CHAN.METRIC path; ``single_level`` also reads a bare ``1``
    (an MDS row written without its trailing zeros)."""
    parts = text.split(".")
    if not all(_SUB_ID_PART.fullmatch(p) for p in parts):
        return None
    if len(parts) < 2 and not single_level:
        return None
    return tuple(int(p) for p in parts)


def _prefix(path: tuple[int, ...]) -> tuple[int, ...]:
    end = len(path)
    while end > 0 and path[end - 1] == 0:
        end -= 1
    return path[:end]


def _equipment_id(msg: RawMessage, seg: Segment) -> str | None:
    """OBX-18 (EI, first repetition): entity identifier, else universal id."""
    reps = msg.reps(seg.raw(18))
    if not reps:
        return None
    ident = msg.unescape(msg.comp(reps[0], 1)).strip() or msg.unescape(msg.comp(reps[0], 3)).strip()
    return ident or None


def _code_system(name: str) -> CodeSystem:
    upper = name.strip().upper()
    if upper in ("MDC", "ISO/IEEE 11073-10101", "IEEE 11073-10101", "2.16.840.1.113883.6.24"):
        return CodeSystem.MDC
    if upper in ("LN", "LOINC", "2.16.840.1.113883.6.1"):
        return CodeSystem.LOINC
    if upper in ("VIGIL", "99VIGIL"):
        return CodeSystem.VIGIL
    return CodeSystem.LOCAL


@dataclass(frozen=True)
class _Code:
    system: CodeSystem
    code: str
    label: str | None
    quantity: Quantity | None


def _resolve_code(ctx: _Ctx, seg: Segment) -> _Code:
    """OBX-3 (CWE): primary triplet, then the alternate ones (components 4-6, 10-12)."""
    msg = ctx.msg
    reps = msg.reps(seg.raw(3))
    comps = [msg.unescape(c).strip() for c in msg.comps(reps[0])] if reps else []
    comps += [""] * (12 - len(comps))
    triplets = [(comps[i], comps[i + 1], comps[i + 2]) for i in (0, 3, 9)]
    candidates = [t for t in triplets if t[0] or t[1]]
    if not candidates:
        raise _invalid(f"OBX {seg.index}: OBX-3 observation identifier missing", seg, 3, "101")
    for ident, text, system_name in candidates:
        system = _code_system(system_name)
        if _MDIL_CODE.fullmatch(ident):
            # Philips MDIL writes an MDC term as hex partition-code: 0002-4bb8 = 150456.
            partition, term = (int(part, 16) for part in ident.split("-"))
            system, ident = CodeSystem.MDC, str(partition * 65536 + term)
        quantity = (lookup(system, ident) if ident else None) or (
            lookup(system, text) if text else None
        )
        if quantity is not None:
            return _Code(system, ident or text, text or None, quantity)
        if text.startswith("MDC_") and (quantity := lookup(CodeSystem.MDC, text)) is not None:
            return _Code(CodeSystem.MDC, text, text, quantity)
    ident, text, system_name = candidates[0]
    return _Code(_code_system(system_name), ident or text, text or None, None)


def _units(ctx: _Ctx, seg: Segment) -> str:
    """OBX-6 (CWE): the first component spelling a known unit (MDC code, UCUM ...)."""
    msg = ctx.msg
    reps = msg.reps(seg.raw(6))
    if not reps:
        return ""
    comps = [msg.unescape(c).strip() for c in msg.comps(reps[0])]
    for i in (0, 1, 3, 4):
        if i < len(comps) and comps[i] and canonical_unit_spelling(comps[i]) is not None:
            return comps[i]
    # Unknown unit: keep the reference id (MDC_DIM_...) over a bare numeric code.
    code, label = [*comps, "", ""][:2]
    unit = label if label and (not code or code.isdigit()) else code
    return _clip(ctx, unit, 32, f"OBX {seg.index} unit") or ""


def _number(text: str) -> float | None:
    text = text.strip()
    if not _NM.match(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _value(
    ctx: _Ctx, seg: Segment, vtype: str, label: str
) -> tuple[float | None, str | None] | None:
    """OBX-5 by OBX-2 (v2.6 7.4.2.2): (value, value_text), None when nothing to keep."""
    msg = ctx.msg
    raw = seg.raw(5)
    where = f"{_name(seg, ctx.msg)} ({label})"
    if vtype == "NM" or (not vtype and _number(msg.unescape(raw)) is not None):
        value = _number(msg.unescape(raw))
        if value is None:
            text = msg.unescape(raw).strip()[:256]
            ctx.warnings.append(f"{where}: NM value {text[:40]!r} is not a number: kept as text")
            return None, text or None
        return value, None
    if vtype == "SN":
        comps = [msg.unescape(c).strip() for c in msg.comps(raw)] + ["", "", "", ""]
        comparator, num1, separator, num2 = comps[:4]
        if any(num and _number(num) is None for num in (num1, num2)):
            text = msg.unescape(raw).strip()[:256]
            ctx.warnings.append(f"{where}: SN value {text[:40]!r} is malformed: kept as text")
            return None, text or None
        if comparator in ("", "=") and not separator and not num2 and num1:
            return _number(num1), None
        return None, f"{comparator}{num1}{separator}{num2}"
    if vtype in _ARRAY_TYPES:
        elements = [e for r in msg.reps(raw) for c in msg.comps(r) for e in c.split("&")]
        bad = next((e for e in elements if e.strip() and _number(e) is None), None)
        if bad is not None:
            raise _invalid(
                f"{where}: {vtype} array element {bad[:20]!r} is not a number"
                " (truncated or corrupt message?)",
                seg,
                5,
                "102",
            )
        ctx.warnings.append(f"{where}: {vtype} array of {len(elements)} samples not kept")
        return None
    if vtype in _SKIPPED_TYPES:
        ctx.warnings.append(f"{where}: value type {vtype} not kept")
        return None
    texts = []
    for rep in msg.reps(raw):
        if vtype in _CODED_TYPES:
            ident, text = msg.comp(rep, 1), msg.comp(rep, 2)
            texts.append(msg.unescape(text or ident).strip())
        else:
            texts.append(msg.unescape(rep).strip())
    text = "; ".join(t for t in texts if t)
    if len(text) > 256:
        ctx.warnings.append(f"{where}: text value longer than 256 characters: truncated")
        text = text[:256]
    return None, text or None


def _obx(
    ctx: _Ctx,
    seg: Segment,
    group: _Group,
    order: _Order,
    all_devices: dict[tuple[int, ...], str],
) -> None:
    msg = ctx.msg
    code = _resolve_code(ctx, seg)
    label = f"{code.system.value} {code.code}"
    seg_name = _name(seg, msg)
    if code.system is CodeSystem.MDC:
        group.mdc_coded = True
    elif code.system is CodeSystem.LOINC:
        group.loinc_coded = True
    vtype = msg.text(seg, 2).upper()
    status = msg.text(seg, 11).upper()
    sub_id = msg.text(seg, 4)
    value_present = bool(seg.raw(5).strip()) and seg.raw(5).strip() != '""'
    path = _containment(
        sub_id, single_level=code.system is CodeSystem.MDC and (status == "X" or not value_present)
    )
    level = len(_prefix(path)) if path is not None else None
    equipment = _equipment_id(msg, seg)
    # A device-hierarchy row (MDS/VMD/CHAN) carries identity, not a value. A metric
    # with status X ("no result") and a value is not one: it is skipped with a warning.
    hierarchy = not value_present and (status == "X" or (level is not None and level < 4))
    if equipment is not None and path is not None and (hierarchy or level == 1):
        key = _prefix(path)
        order.devices[key] = equipment
        all_devices.setdefault(key, equipment)
        if len(key) == 1 and equipment not in group.mds_ids:
            group.mds_ids.append(equipment)
    if hierarchy:
        return
    if status in _NO_RESULT_STATUS:
        meaning = _NO_RESULT_STATUS[status]
        ctx.warnings.append(f"{seg_name} ({label}): status {status} ({meaning}): skipped")
        return
    if not value_present:
        ctx.warnings.append(f"{seg_name} ({label}): no value")
        return
    kept = _value(ctx, seg, vtype, label)
    if kept is None:
        return
    value, value_text = kept
    if value is None and value_text is None:
        ctx.warnings.append(f"{seg_name} ({label}): no value")
        return
    observed = ctx.dtm(seg, 14) or order.time
    if observed is None:
        observed = _fallback_time(ctx, seg, order)
    if observed > ctx.received_at + _FUTURE_SLACK:
        ctx.warnings.append(f"{seg_name} ({label}): observation time in the future")
    device = equipment
    if device is None and path is not None:
        for end in range(len(path) - 1, 0, -1):
            key = _prefix(path[:end])
            device = order.devices.get(key) or all_devices.get(key)
            if device is not None:
                break
    flags = {msg.unescape(f).strip().upper() for f in msg.reps(seg.raw(8))}
    unit = _units(ctx, seg)
    try:
        measurement = normalise(
            code.system,
            code.code,
            observed,
            value=value,
            value_text=value_text,
            unit=unit,
            code_label=code.label[:128] if code.label else None,
            device_id=_clip(ctx, device, 128, "OBX-18 equipment id"),
            containment=sub_id if path is not None and len(sub_id) <= 64 else None,
            artefact=bool(flags & _ARTEFACT_FLAGS),
            quantity=code.quantity,
        )
    except ValidationError as exc:
        raise _invalid(f"{seg_name} ({label}): {_first_error(exc)}", seg, 5, "102") from None
    if measurement.quantity is None:
        if code.quantity is not None and value is None:
            ctx.warnings.append(
                f"{seg_name} ({label}): {code.quantity.value} needs a number, got"
                f" {value_text!r}: kept as unknown"
            )
        elif code.quantity is not None:
            ctx.warnings.append(
                f"{seg_name} ({label}): unit {unit!r} is not one {code.quantity.value}"
                " converts from: kept as unknown"
            )
        else:
            ctx.warnings.append(f"{seg_name} ({label}): code unknown to Vigil, kept flagged")
    group.measurements.append((measurement, status))


def _name(seg: Segment, msg: RawMessage) -> str:
    set_id = msg.text(seg, 1)
    return f"OBX {set_id}" if set_id else f"OBX #{seg.index}"


def _fallback_time(ctx: _Ctx, seg: Segment, order: _Order) -> datetime:
    """No OBX-14 nor OBR-7: OBR-8 (end), else MSH-7, else receipt time; warned once per OBR."""
    candidates = [(ctx.dtm(order.segment, 8), "OBR-8")] if order.segment else []
    candidates += [(ctx.sent_at, "MSH-7"), (ctx.received_at, "the receipt time")]
    time, where = next((t, w) for t, w in candidates if t is not None)
    if not order.warned_time:
        order.warned_time = True
        ctx.warnings.append(f"{_name(seg, ctx.msg)}: no OBX-14 or OBR-7: time taken from {where}")
    return time


def _result_status(statuses: Sequence[str]) -> Literal["P", "F", "C"]:
    mapped = {"P": "P", "R": "P", "S": "P", "C": "C", "A": "C"}
    found = {mapped.get(s, "F") for s in statuses}
    if "P" in found:
        return "P"
    return "C" if "C" in found else "F"


def _observation_records(ctx: _Ctx, group: _Group) -> list[Outbound]:
    lab_message = group.loinc_coded and not group.mdc_coded
    unknown_topic = Category.LABS if lab_message else Category.VITALS
    by_topic: dict[Category, list[tuple[Measurement, str]]] = {}
    for m, status in group.measurements:
        category = QUANTITIES[m.quantity].category if m.quantity else unknown_topic
        by_topic.setdefault(category, []).append((m, status))
    if len(group.mds_ids) == 1:
        device_id: str | None = group.mds_ids[0]
    else:
        ids = {m.device_id for m, _ in group.measurements if m.device_id}
        device_id = ids.pop() if len(ids) == 1 else None
    source = _source(ctx, device_id)
    records: list[Outbound] = []
    for category, items in by_topic.items():
        model = _TOPIC_MODEL[category]
        for start in range(0, len(items), _MAX_MEASUREMENTS):
            chunk = items[start : start + _MAX_MEASUREMENTS]
            fields: dict[str, object] = {
                "patient_id": group.patient_id,
                "bed": group.location.bed,
                "care_unit": group.location.care_unit,
                "source": source,
                "received_at": ctx.received_at,
                "measurements": tuple(m for m, _ in chunk),
            }
            if model is LabResults:
                fields["order_id"] = _clip(
                    ctx, group.order_ids[0] if group.order_ids else None, 64, "OBR-3"
                )
                fields["result_status"] = _result_status([s for _, s in chunk])
                if len(set(group.order_ids)) > 1:
                    ctx.warnings.append("several OBR-3 filler orders: order_id is the first")
            records.append(Outbound(category.value, group.patient_id, _validated(model, fields)))
    return records


def _validated(model: type[BaseModel], fields: dict[str, object]) -> BaseModel:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise Hl7RefusedError("invalid_message", _first_error(exc), hl7_code="102") from None


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


# -- ADT ------------------------------------------------------------------------------

_SEX = {"F": "female", "M": "male", "O": "other", "A": "other", "X": "other", "N": "other"}
_DEATH = {"20", "40", "41", "42", "DEATH", "DIED", "EXPIRED", "EXP"}
_HOME = {"01", "06", "07", "08", "HOME"}
_TRANSFER = {"02", "03", "04", "05", "43", "50", "51", "61", "62", "63", "64", "65", "66", "70"}
_WARD = {"WARD", "FLOOR"}


def _disposition(code: str) -> Literal["home", "ward", "transfer", "death", "unknown"]:
    """PV1-36 discharge disposition (user table 0112; UB-04 patient status codes)."""
    upper = code.strip().upper()
    if upper in _DEATH:
        return "death"
    if upper in _HOME:
        return "home"
    if upper in _TRANSFER:
        return "transfer"
    if upper in _WARD:
        return "ward"
    return "unknown"


def _adt(ctx: _Ctx, trigger: str) -> list[Outbound]:
    msg = ctx.msg
    pid = msg.find("PID")
    if pid is None:
        raise Hl7RefusedError(
            "no_patient_identity", f"ADT^{trigger} without a PID segment", hl7_code="100"
        )
    patient_id = _patient_id(ctx, pid)
    evn = msg.find("EVN")
    observed = (ctx.dtm(evn, 6) or ctx.dtm(evn, 2)) if evn else None
    if observed is None:
        observed = ctx.sent_at or ctx.received_at
        ctx.warnings.append(
            "EVN-6/EVN-2 missing: event time from " + ("MSH-7" if ctx.sent_at else "receipt")
        )
    pv1 = msg.find("PV1")
    where = _location(ctx, pv1)
    common: dict[str, object] = {
        "patient_id": patient_id,
        "observed_at": observed,
        "received_at": ctx.received_at,
        "source": _source(ctx, None),
    }
    event: BaseModel
    if trigger == "A01":
        birth = ctx.dtm(pid, 7)
        age: float | None = None
        if birth is not None:
            age = round((observed - birth).total_seconds() / (365.2425 * 86400), 2)
            if not 0 <= age <= 130:
                ctx.warnings.append(f"PID-7 birth date gives age {age}: ignored")
                age = None
        sex = _SEX.get(msg.text(pid, 8).upper()[:1], "unknown")
        model: type[BaseModel] = Admission
        fields = {**common, "bed": where.bed, "care_unit": where.care_unit, "site": where.site}
        fields |= {"age_years": age, "sex": sex}
    elif trigger == "A02":
        model = Transfer
        fields = {**common, "bed": where.bed, "care_unit": where.care_unit, "site": where.site}
    else:
        code = msg.text(pv1, 36) if pv1 else ""
        disposition = _disposition(code)
        if msg.text(pid, 30).upper() == "Y":
            disposition = "death"
        if code and disposition == "unknown":
            ctx.warnings.append(f"PV1-36 discharge disposition {code!r} not mapped")
        model = Discharge
        fields = {**common, "disposition": disposition}
    event = _validated(model, fields)
    payload = ContextEvent.model_validate(event.model_dump())
    return [Outbound("context", patient_id, payload)]


# -- ACK ------------------------------------------------------------------------------


def _clean(value: str) -> str:
    return "".join(ch for ch in value if ord(ch) >= 32 and ord(ch) != 127)


def _error_code(error: InputRefusedError | None) -> str:
    if isinstance(error, Hl7RefusedError):
        return error.hl7_code
    if error is None:
        return "207"
    return _REASON_CODES.get(error.reason, "207")


def build_ack(
    code: str,
    *,
    header: Hl7Header | None,
    raw: bytes | None,
    now: datetime,
    error: InputRefusedError | None = None,
    control_id: str,
) -> bytes:
    """An HL7 ACK (v2.6 2.9.2 original mode, 2.14.1): MSH, MSA and, on errors, ERR.

    Sending and receiving application/facility are swapped, MSA-2 is the original
    MSH-10 and the sender's encoding characters are used. With ``header=None`` the
    header is recovered from ``raw`` as far as possible (:func:`recover_header`).
    ERR-3 carries the table 0357 code, ERR-4 severity E, ERR-5 Vigil's reason,
    ERR-7 the diagnostic; versions before 2.5 also get ERR-1 and MSA-3.

    >>> from datetime import UTC, datetime
    >>> ack = build_ack("AR", header=None, raw=b"MSH|^~\\\\&|MON|ICU|VIG|HOSP|x||QRY^A19|7|P|2.4",
    ...                 now=datetime(2026, 1, 1, tzinfo=UTC), control_id="A1",
    ...                 error=InputRefusedError("unsupported_message_type", "no QRY"))
    >>> msh, msa, err = ack.decode().split("\\r")[:3]
    >>> msh
    'MSH|^~\\\\&|VIG|HOSP|MON|ICU|20260101000000+0000||ACK^A19^ACK|A1|P|2.4'
    >>> msa
    'MSA|AR|7|no QRY'
    >>> err.split("|")[3:]
    ['200^Unsupported message type^HL70357', 'E', 'unsupported_message_type^^99VIGIL', '', 'no QRY']
    """
    if code not in ACK_CODES:
        raise ValueError(f"ACK code must be one of {sorted(ACK_CODES)}, got {code!r}")
    if header is None:
        header = recover_header(raw)
    h = header or Hl7Header(encoding=Encoding())
    enc = h.encoding
    c = enc.component
    trigger = _clean(h.trigger_event)
    old_version = h.version_id[:3] in ("2.1", "2.2", "2.3", "2.4")
    msh = [
        "MSH",
        enc.msh2,
        _clean(h.receiving_application),
        _clean(h.receiving_facility),
        _clean(h.sending_application),
        _clean(h.sending_facility),
        format_dtm(now),
        "",
        f"ACK{c}{escape(trigger, enc)}{c}ACK" if trigger else "ACK",
        escape(control_id, enc),
        escape(h.processing_id, enc) or "P",
        escape(h.version_id, enc) or "2.6",
    ]
    if h.character_set:
        msh += ["", "", "", "", "", escape(h.character_set, enc)]
    msa = ["MSA", code, escape(h.control_id, enc)]
    segments = [msh, msa]
    if code in _ERROR_ACKS:
        err_code = _error_code(error)
        err_text = ERROR_TEXT.get(err_code, "Application internal error")
        detail = str(error) if error is not None else ""
        diagnostic = escape(detail[:1024], enc)
        location = error.location if isinstance(error, Hl7RefusedError) else None
        s = enc.subcomponent
        erl = f"{location[0]}{c}{location[1]}{c}{location[2]}" if location else ""
        err1 = f"{erl}{c}" if location else f"{c}{c}{c}"
        err = [
            "ERR",
            f"{err1}{err_code}{s}{err_text}{s}HL70357" if old_version else "",
            erl,
            f"{err_code}{c}{err_text}{c}HL70357",
            "E",
            f"{escape(error.reason, enc)}{c}{c}99VIGIL" if error is not None else "",
            "",
            diagnostic,
        ]
        segments.append(err)
        if old_version and detail:
            msa.append(escape(detail[:80], enc))
    text = "\r".join(enc.field.join(f for f in seg) for seg in segments) + "\r"
    codec = _CHARSETS.get(h.character_set.split(enc.repetition)[0].strip().upper(), "utf-8")
    return text.encode(codec, errors="replace")
