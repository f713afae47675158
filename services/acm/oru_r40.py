"""Alert events as IHE PCD-04 "Report Alert" messages (HL7 v2.6 ORU^R40), pure.

The layout follows the IHE PCD Technical Framework, Alert Communication Management
(ACM) profile, transaction PCD-04, and mirrors segment for segment the Draeger
reference messages in ``../shared/data/hl7/draeger-ihe-pcd-acm`` (``PCD04_alarm.txt``):

=========  ==========================================================================
MSH        MSH-3 ``<EUI-64>^EUI-64`` (the alert reporter), MSH-4 the site, MSH-9
           ``ORU^R40^ORU_R40``, MSH-10 = the event id (a resend keeps it), MSH-15/16
           ``AL``/``NE`` (commit ACK always, no application ACK), MSH-21 the ACM profile
PID        PID-3 ``<patient id>^^^^PI``
PV1        PV1-2 ``I``, PV1-3 ``<care unit>^^<bed>^<site>`` (Draeger: ``CU1^^Bed001^TAM``)
OBR        OBR-3 ``<sequence>^<alert id>^<EUI-64>^EUI-64``: one alert, one id; OBR-4
           ``196616^MDC_EVT_ALARM^MDC``; OBR-7 the observation time of the trigger;
           OBR-29 the parent ``^0&<alert id>&<EUI-64>&EUI-64``: every event of an alert
           points at its start event (sequence 0)
OBX 1, 2   the reporting device (MDS, VMD), value type empty, status ``X``
OBX 3      event identification: OBX-3 the MDC event code where the rule maps to one
           (``MDC_EVT_LO``/``MDC_EVT_HI``), else a local code ``<rule id>^^99VIGIL``;
           OBX-5 (ST) the alert text
OBX 4      ``68480^MDC_ATTR_ALERT_SOURCE^MDC``: the parameter in alarm, written as
           ``code^name^system`` in ST as Draeger's watchdog does
OBX 5-9    event phase, alarm state, inactivation state, priority, alert kind (ST)
OBX 10     (when the alert carries the value that fired it) the value, NM, with its
           unit and abnormal flag ``L``/``H``, OBX-3 = the parameter's code
=========  ==========================================================================

Vigil's phases map to PCD event phases: start -> ``start``, escalate -> ``escalate``,
end -> ``end``, update -> ``continue`` for a reminder, ``update`` otherwise (acknowledge,
silence, latched, relapsed). Alarm state: ``active``, ``latched`` or (end) ``inactive``.
Inactivation state: ``enabled``, ``alert-acknowledged``, ``audio-paused`` (reminders
silenced). Priority: high/medium/low -> ``PH``/``PM``/``PL``; kind physiological ->
``SP``, technical -> ``ST``.

>>> from datetime import UTC, datetime
>>> t = datetime(2026, 5, 1, 14, 0, tzinfo=UTC)
>>> alert = AlertEvent(event_id="e-1", alert_id="a-1", sequence=0, patient_id="p1",
...     bed="ICU1-02", care_unit="ICU1", site="NORTH", phase="start", priority="medium",
...     rule_id="perfusion.map_low", rule_version=1, title="MAP below 65 mmHg",
...     values={"map_median_1min_mmhg": 58.0}, thresholds={"map_median_1min_mmhg": 65.0},
...     condition_since=t, triggered_at=t, raised_at=t, explanation=(), source="CLINICAL.md")
>>> msg = build_oru_r40(alert, ReporterIdentity(eui64="00000000000000A1"), now=t)
>>> lines = msg.decode().split("\\r")
>>> lines[2]
'PV1||I|ICU1^^ICU1-02^NORTH'
>>> lines[3].split("|")[3]
'0^a-1^00000000000000A1^EUI-64'
>>> [line.split("|")[5] for line in lines[6:14]]  # doctest: +NORMALIZE_WHITESPACE
['MAP below 65 mmHg', '150035^MDC_PRESS_BLD_ART_MEAN^MDC', 'start', 'active', 'enabled',
 'PM', 'SP', '58']
>>> lines[6].split("|")[3]
'196670^MDC_EVT_LO^MDC'
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Literal

from schemas.alerts import AlertEvent, AlertPhase, AlertPriority, AlertReason
from schemas.codes import QUANTITIES, CodeSystem, Quantity
from services.ingest.hl7_syntax import (
    Encoding,
    Hl7RefusedError,
    decode_message,
    escape,
    format_dtm,
)

__all__ = [
    "ACM_PROFILE",
    "RULE_EVENT_CODES",
    "AckReply",
    "EventCode",
    "ReporterIdentity",
    "build_oru_r40",
    "build_watchdog",
    "event_phase",
    "parse_ack",
]

ACM_PROFILE = "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.4.1^ISO"
"""MSH-21: the message profile of PCD-04 (as in the Draeger reference)."""

_ENC = Encoding()
_EUI64 = re.compile(r"^[0-9A-F]{16}$")
_LOCAL_SYSTEM = "99VIGIL"  # HL7 v2 local coding systems are named 99zzz
_MDS = "69837^MDC_DEV_METER_PHYSIO_MULTI_PARAM_MDS^MDC"
_VMD = "69838^MDC_DEV_METER_PHYSIO_MULTI_PARAM_VMD^MDC"
_EVT_ALARM = "196616^MDC_EVT_ALARM^MDC"
_ALERT_SOURCE = "68480^MDC_ATTR_ALERT_SOURCE^MDC"
_EVENT_PHASE = "68481^MDC_ATTR_EVENT_PHASE^MDC"
_ALARM_STATE = "68482^MDC_ATTR_ALARM_STATE^MDC"
_INACTIVATION_STATE = "68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC"
_PRIORITY = "68484^MDC_ATTR_ALARM_PRIORITY^MDC"
_ALERT_TYPE = "68485^MDC_ATTR_ALERT_TYPE^MDC"


@dataclass(frozen=True)
class EventCode:
    """The MDC event a rule reports (IEEE 11073-10101 partition 3) and its source parameter."""

    code: str
    reference_id: str
    direction: Literal["L", "H"]  # HL7 table 0078 abnormal flag of the value that fired
    source: Quantity | None = None


_LO = ("196670", "MDC_EVT_LO", "L")
_HI = ("196648", "MDC_EVT_HI", "H")


def _evt(kind: tuple[str, str, str], source: Quantity | None = None) -> EventCode:
    code, ref, direction = kind
    return EventCode(code, ref, "L" if direction == "L" else "H", source)


RULE_EVENT_CODES: dict[str, EventCode] = {
    # Limit alarms: a measured quantity below / above its threshold (MDC_EVT_LO / _HI,
    # IEEE 11073-10101 partition 3; the parameter goes in the alert source OBX). Term
    # codes as listed in the FHIR R6 DeviceAlert condition value set (196648 MDC_EVT_HI,
    # 196670 MDC_EVT_LO); not checked against the IEEE nomenclature text itself.
    "perfusion.map_low": _evt(_LO, Quantity.ABP_MEAN),
    "perfusion.map_low_cuff": _evt(_LO, Quantity.NBP_MEAN),
    "perfusion.lactate_high": _evt(_HI, Quantity.LACTATE),
    "perfusion.shock_index_high": _evt(_HI),
    "brain.rso2_low": _evt(_LO),
    "crrt.tmp_high": _evt(_HI, Quantity.CRRT_TMP),
    "crrt.net_uf_high": _evt(_HI, Quantity.CRRT_NET_UF_RATE),
    "crrt.effluent_dose_low": _evt(_LO),
}
"""Rules that map to an MDC event code; every other rule gets a local code (99VIGIL).

Composite rules (SOFA worsening, KDIGO staging, congestion, no-data technical alarms,
delivery failures) have no MDC event term and keep their rule id as a local code.
"""

_UNIT_SUFFIXES = (
    ("_mmhg", "mm[Hg]"),
    ("_pct", "%"),
    ("_mmol_l", "mmol/L"),
    ("_mg_dl", "mg/dL"),
    ("_ml_kg_h", "mL/kg/h"),
    ("_ml_min", "mL/min"),
    ("_ml_h", "mL/h"),
    ("_ml", "mL"),
    ("_per_min", "/min"),
    ("_ug_kg_min", "ug/kg/min"),
    ("_min", "min"),
    ("_s", "s"),
)


@dataclass(frozen=True)
class ReporterIdentity:
    """Who reports the alerts (the alert reporter, AR): MSH-3, OBR-3 and OBX-18."""

    eui64: str
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: Literal["P", "D", "T"] = "P"

    def __post_init__(self) -> None:
        if not _EUI64.match(self.eui64):
            raise ValueError(f"EUI-64 must be 16 upper-case hex digits, got {self.eui64!r}")

    @cached_property
    def equipment(self) -> str:
        """OBX-18 equipment instance: a URN derived from the EUI-64 (stable)."""
        urn = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, f'vigil.eui64.{self.eui64}')}"
        return f"{urn}^^{urn}^URN"

    @classmethod
    def default_eui64(cls, name: str) -> str:
        """A stable EUI-64 for an installation name (set a real one in production).

        >>> ReporterIdentity.default_eui64("vigil")
        '6B27EBA5652B46D3'
        """
        return hashlib.sha256(name.encode()).hexdigest()[:16].upper()


def event_phase(alert: AlertEvent) -> str:
    """The PCD event phase (MDC_ATTR_EVENT_PHASE) of an alert event."""
    if alert.phase is AlertPhase.START:
        return "start"
    if alert.phase is AlertPhase.ESCALATE:
        return "escalate"
    if alert.phase is AlertPhase.END:
        return "end"
    return "continue" if alert.reason is AlertReason.REMINDER else "update"


def _alarm_state(alert: AlertEvent) -> str:
    if alert.phase is AlertPhase.END:
        return "inactive"
    return "latched" if alert.latched else "active"


def _inactivation_state(alert: AlertEvent) -> str:
    if alert.acknowledged_by is not None:
        return "alert-acknowledged"
    if alert.silenced_until is not None and alert.silenced_until > alert.raised_at:
        return "audio-paused"
    return "enabled"


_PRIORITY_CODES = {AlertPriority.HIGH: "PH", AlertPriority.MEDIUM: "PM", AlertPriority.LOW: "PL"}


def _unit_of(name: str) -> str:
    for suffix, unit in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return ""


def _source(alert: AlertEvent, event: EventCode | None) -> tuple[str, str | None, float | None]:
    """(source as code^name^system, the value name that fired it, its value)."""
    name = next(iter(alert.thresholds), None) or next(iter(alert.values), None)
    value = alert.values.get(name) if name is not None else None
    if event is not None and event.source is not None:
        system, code, ref = QUANTITIES[event.source].primary
        coded = f"{code}^{ref}^MDC" if system is CodeSystem.MDC else f"{code}^^{system}"
        return coded, name, value
    if name is None:
        return f"{escape(alert.rule_id, _ENC)}^^{_LOCAL_SYSTEM}", None, None
    return f"{escape(name, _ENC)}^^{_LOCAL_SYSTEM}", name, value


def _obx(
    n: int, vtype: str, ident: str, sub: str, value: str, status: str, equipment: str
) -> list[str]:
    """OBX-1 .. OBX-18 with OBX-5 = ``value``, OBX-11 = ``status``, OBX-18 the equipment."""
    fields = ["OBX", str(n), vtype, ident, sub, value, "", "", "", "", "", status]
    return [*fields, "", "", "", "", "", "", equipment]


def _number(value: float) -> str:
    text = f"{value:.6g}"
    return text if "e" not in text else f"{value:f}".rstrip("0").rstrip(".")


def build_oru_r40(alert: AlertEvent, reporter: ReporterIdentity, *, now: datetime) -> bytes:
    """The ORU^R40 of one alert event, segments ended by CR, UTF-8 (MSH-18)."""
    e = _ENC
    eui = reporter.eui64
    site = escape(alert.site or "", e)
    event = RULE_EVENT_CODES.get(alert.rule_id)
    event_code = (
        f"{event.code}^{event.reference_id}^MDC"
        if event is not None
        else f"{escape(alert.rule_id, e)}^^{_LOCAL_SYSTEM}"
    )
    source, value_name, value = _source(alert, event)
    when = format_dtm(alert.triggered_at)
    equipment = reporter.equipment
    alert_id = escape(alert.alert_id, e)
    msh = [
        "MSH",
        e.msh2,
        f"{eui}^EUI-64",
        site,
        escape(reporter.receiving_application, e),
        escape(reporter.receiving_facility, e),
        format_dtm(now),
        "",
        "ORU^R40^ORU_R40",
        escape(alert.event_id, e),
        reporter.processing_id,
        "2.6",
        "",
        "",
        "AL",
        "NE",
        "",
        "UNICODE UTF-8",
        "",
        "",
        ACM_PROFILE,
    ]
    pid = ["PID", "", "", f"{escape(alert.patient_id, e)}^^^^PI"]
    location = f"{escape(alert.care_unit or '', e)}^^{escape(alert.bed or '', e)}^{site}"
    pv1 = ["PV1", "", "I", location]
    obr = ["OBR", "1", "", f"{alert.sequence}^{alert_id}^{eui}^EUI-64", _EVT_ALARM, "", "", when]
    obr += [""] * (29 - len(obr)) + [f"^0&{alert_id}&{eui}&EUI-64"]

    def obx(n: int, vtype: str, ident: str, sub: str, value: str, status: str = "F") -> list[str]:
        return _obx(n, vtype, ident, sub, value, status, equipment)

    obxs = [
        obx(1, "", _MDS, "1.0.0.0", "", "X"),
        obx(2, "", _VMD, "1.1.0.0", "", "X"),
        obx(3, "ST", event_code, "1.1.1.1", escape(alert.title, e)),
        obx(4, "ST", _ALERT_SOURCE, "1.1.1.2", source),
        obx(5, "ST", _EVENT_PHASE, "1.1.1.3", event_phase(alert)),
        obx(6, "ST", _ALARM_STATE, "1.1.1.4", _alarm_state(alert)),
        obx(7, "ST", _INACTIVATION_STATE, "1.1.1.5", _inactivation_state(alert)),
        obx(8, "ST", _PRIORITY, "1.1.1.6", _PRIORITY_CODES[alert.priority]),
        obx(9, "ST", _ALERT_TYPE, "1.1.1.7", "ST" if alert.kind == "technical" else "SP"),
    ]
    if value is not None and value_name is not None:
        unit = _unit_of(value_name)
        measured = obx(10, "NM", source, "1.1.1.8", _number(value))
        measured[6] = f"{unit}^{unit}^UCUM" if unit else ""
        measured[8] = event.direction if event is not None else ""
        measured[14] = when  # OBX-14: observation time
        obxs.append(measured)
    segments = [msh, pid, pv1, obr, *obxs]
    text = "\r".join(e.field.join(seg).rstrip(e.field) for seg in segments) + "\r"
    return text.encode("utf-8")


def build_watchdog(
    reporter: ReporterIdentity,
    *,
    now: datetime,
    control_id: str,
    counter: int,
    confirm_timeout_s: float,
    site: str | None = None,
) -> bytes:
    """A keep-alive ORU^R40 as Draeger's ``PCD04_watchdog.txt``: ``MDC_EVT_ACTIVE``
    (``continue``), priority ``PN``, kind ``SA`` and ``MDC_ATTR_CONFIRM_TIMEOUT``. It is
    about no patient: PID-3 is empty and PV1-3 names only the site.

    >>> from datetime import UTC, datetime
    >>> msg = build_watchdog(ReporterIdentity(eui64="00000000000000A1"), control_id="w-7",
    ...     now=datetime(2026, 5, 1, tzinfo=UTC), counter=7, confirm_timeout_s=10)
    >>> [line.split("|")[5] for line in msg.decode().split("\\r")[6:13]]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['continue', '69837^MDC_DEV_METER_PHYSIO_MULTI_PARAM_MDS^MDC', 'start', 'active',
     'enabled', 'PN', 'SA']
    """
    e = _ENC
    eui = reporter.eui64
    urn = reporter.equipment.split("^", 1)[0]
    when = format_dtm(now)
    site_text = escape(site or "", e)
    msh = [
        "MSH", e.msh2, f"{eui}^EUI-64", site_text,
        escape(reporter.receiving_application, e), escape(reporter.receiving_facility, e),
        when, "", "ORU^R40^ORU_R40", escape(control_id, e), reporter.processing_id, "2.6",
        "", "", "AL", "NE", "", "UNICODE UTF-8", "", "", ACM_PROFILE,
    ]  # fmt: skip
    obr = ["OBR", "1", "", f"{counter}^{urn}^{eui}^EUI-64", _EVT_ALARM, "", "", when]
    obr += [""] * (29 - len(obr)) + [f"^0&{urn}&{eui}&EUI-64"]
    equipment = reporter.equipment

    def obx(n: int, vtype: str, ident: str, sub: str, value: str, status: str = "F") -> list[str]:
        return _obx(n, vtype, ident, sub, value, status, equipment)

    timeout = obx(
        10, "NM", "67860^MDC_ATTR_CONFIRM_TIMEOUT^MDC", "1.1.1.8", f"{confirm_timeout_s:g}"
    )
    timeout[6] = "264320^MDC_DIM_SEC^MDC"
    segments = [
        msh,
        ["PID", "", "", ""],
        ["PV1", "", "I", f"^^^{site_text}"],
        obr,
        obx(1, "", _MDS, "1.0.0.0", "", "X"),
        obx(2, "", _VMD, "1.1.0.0", "", "X"),
        obx(3, "ST", "196614^MDC_EVT_ACTIVE^MDC", "1.1.1.1", "continue"),
        obx(4, "ST", _ALERT_SOURCE, "1.1.1.2", _MDS),
        obx(5, "ST", _EVENT_PHASE, "1.1.1.3", "start"),
        obx(6, "ST", _ALARM_STATE, "1.1.1.4", "active"),
        obx(7, "ST", _INACTIVATION_STATE, "1.1.1.5", "enabled"),
        obx(8, "ST", _PRIORITY, "1.1.1.6", "PN"),
        obx(9, "ST", _ALERT_TYPE, "1.1.1.7", "SA"),
        timeout,
    ]
    text = "\r".join(e.field.join(seg).rstrip(e.field) for seg in segments) + "\r"
    return text.encode("utf-8")


@dataclass(frozen=True)
class AckReply:
    """The receiver's answer: MSA-1 acknowledgment code, MSA-2 control id, MSA-3 text."""

    code: str
    control_id: str
    text: str = ""

    @property
    def committed(self) -> bool:
        """Commit accept or application accept: the receiver has the message."""
        return self.code in ("CA", "AA")


def parse_ack(payload: bytes) -> AckReply:
    """The MSA of an ACK frame; ``ValueError`` when it is not an HL7 ACK.

    >>> parse_ack(b"MSH|^~\\\\&#|||||20191127160542||ACK^R40|||2.7\\rMSA|CA|2df8\\r")
    AckReply(code='CA', control_id='2df8', text='')
    >>> parse_ack(b"MSH|^~\\\\&|||||x||ACK|1|P|2.6\\rMSA|AE|9|bad OBX").committed
    False
    """
    try:
        msg = decode_message(payload)
    except Hl7RefusedError as exc:
        raise ValueError(f"reply is not HL7: {exc}") from exc
    msa = msg.find("MSA")
    if msa is None:
        raise ValueError("reply has no MSA segment")
    code = msg.text(msa, 1).upper()
    if code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        raise ValueError(f"MSA-1 {code!r} is not an acknowledgment code")
    return AckReply(code, msg.text(msa, 2), msg.text(msa, 3))
